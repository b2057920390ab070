"""Full-text search helpers shared by the built-in memory search and tool plugins (SQLite FTS5)."""

from __future__ import annotations

import re

# Words beyond this add little to ranking and make the match expression slow.
MAX_QUERY_WORDS = 32


def match_expression(text: str) -> str | None:
    """An FTS5 query matching any word of `text` (None when it has no words).

    Every word is quoted, so a person's or a model's punctuation (apostrophes, question marks,
    AND, NOT) is searched for as text and never read as FTS5 syntax.
    """
    words = re.findall(r"\w+", text)[:MAX_QUERY_WORDS]
    return " OR ".join(f'"{word}"' for word in words) or None
