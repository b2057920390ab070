"""What a client's JSON must also satisfy, beyond being JSON, before voicestack handles it.

- Nesting at most MAX_JSON_DEPTH arrays and objects deep. Python's parser, pydantic and the
  encoder all recurse once per level, so a body nested a few thousand deep ended in a
  RecursionError (a 500). The depth is measured on the text, before parsing, without recursion.
- No lone UTF-16 surrogate (`"\\ud800"` unpaired) in a string or key. JSON's grammar lets one
  through, but it is no character: SQLite and every UTF-8 encoder refuse it later, as a 500.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

# Far deeper than any real argument (a thread's arguments are 2 levels deep), and far enough
# below Python's recursion limit of 1,000 for a request's own frames on top.
MAX_JSON_DEPTH = 512

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# A surrogate as an escape or, in text that did not come from UTF-8, as a character.
_MAYBE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}|[\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def nested_too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when JSON `text` opens more than `limit` arrays and objects inside one another.

    Linear in the text; only text with more than `limit` brackets is scanned at all.
    """
    if text.count("[") + text.count("{") <= limit:
        return False  # no text is deeper than the brackets it holds
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depths = itertools.accumulate(map(_STEP.__getitem__, brackets))
    return max(depths, default=0) > limit


def holds_lone_surrogate(text: str, value: Any) -> bool:
    """True when `value`, parsed from JSON `text`, has a string or key with a lone surrogate."""
    if _MAYBE_SURROGATE.search(text) is None:
        return False  # the usual case: no walk over the value
    pending = [value]
    while pending:  # a loop, not recursion: the value may be MAX_JSON_DEPTH deep
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False
