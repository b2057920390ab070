"""Streamed reply text cut into sentences to speak, and each sentence cleaned for a voice."""

from __future__ import annotations

import re

# A sentence ends at . ! ? or … (optionally closed by quotes or brackets) once white space
# follows, or at a line break. The white space must have arrived: "3." may become "3.5".
_END = re.compile(r"""[.!?…]+["'”’)\]]*(?=\s)|\n""")
# A period after these is not an end: "Dr. Smith", "e.g. this".
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "approx", "no"}
)
_CLAUSE = re.compile(r"[,;:—–]\s")
_MARKUP = re.compile(r"(\*\*|__|`+|^\s*#+\s*|^\s*[-*+]\s+|^\s*>\s*)", re.MULTILINE)
_SPACE = re.compile(r"\s+")


def _is_abbreviation(text: str, end: int) -> bool:
    """True when the period ending at `end` follows an abbreviation or an initial."""
    if text[end - 1] != ".":
        return False
    words = text[: end - 1].split()
    word = words[-1].lower().lstrip("(\"'“‘") if words else ""
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


class SentenceSplitter:
    """Collects streamed text and hands back each sentence once it is complete."""

    def __init__(self, max_chars: int = 400) -> None:
        self._buffer = ""
        self._max_chars = max_chars

    def add(self, text: str) -> list[str]:
        """Take the next piece of text; returns the sentences it completed, in order."""
        self._buffer += text
        sentences: list[str] = []
        while sentence := self._next():
            sentences.append(sentence)
        return sentences

    def flush(self) -> str:
        """Whatever is left (the reply ended): the last sentence, possibly unterminated."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest

    def _next(self) -> str:
        cut = 0
        for match in _END.finditer(self._buffer):
            if not _is_abbreviation(self._buffer, match.end()):
                cut = match.end()
                break
        if not cut and len(self._buffer) > self._max_chars:
            cut = self._long_cut()
        if not cut:
            return ""
        sentence, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:].lstrip()
        return sentence or self._next()

    def _long_cut(self) -> int:
        """Where to cut a sentence too long to wait for: a clause, else a word boundary."""
        head = self._buffer[: self._max_chars]
        clauses = [m.end() for m in _CLAUSE.finditer(head)]
        if clauses:
            return clauses[-1]
        space = head.rfind(" ")
        return space + 1 if space > 0 else self._max_chars


def speakable(sentence: str) -> str:
    """The sentence as a voice should say it: markdown marks removed, spacing collapsed.

    Empty when nothing in it can be spoken (a lone "—" or "...").
    """
    text = _SPACE.sub(" ", _MARKUP.sub(" ", sentence)).strip()
    return text if any(ch.isalnum() for ch in text) else ""
