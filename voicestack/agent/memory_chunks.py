"""Long texts are embedded in chunks: one vector per few hundred words keeps each one specific.

A chunk ends at a paragraph, sentence or word boundary before MAX_CHARS, and the next one
repeats the last OVERLAP characters' words, so a sentence cut between two chunks is still found
whole in one of them.
"""

from __future__ import annotations

import re

# About 400 tokens of English: well inside every embedding model's input limit.
MAX_CHARS = 1600
OVERLAP = 160
_BREAKS = (re.compile(r"\n\s*\n"), re.compile(r"(?<=[.!?。])\s+"), re.compile(r"\s+"))


def _cut(text: str, limit: int) -> int:
    """Where to end a chunk of `text` at most `limit` characters long."""
    for pattern in _BREAKS:
        ends = [m.end() for m in pattern.finditer(text, 0, limit + 1) if m.start() > limit // 2]
        if ends:
            return ends[-1]
    return limit


def split_text(text: str, max_chars: int = MAX_CHARS, overlap: int = OVERLAP) -> list[str]:
    """`text` as chunks of at most `max_chars` characters, in order, none empty."""
    text = text.strip()
    chunks: list[str] = []
    while len(text) > max_chars:
        end = _cut(text, max_chars)
        chunks.append(text[:end].strip())
        back = text.find(" ", max(0, end - overlap), end)
        start = back + 1 if overlap and 0 < back < end - 1 else end
        text = text[start:].strip()
    if text:
        chunks.append(text)
    return [chunk for chunk in chunks if chunk]
