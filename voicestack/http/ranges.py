"""HTTP byte ranges (RFC 9110 §14): one range served as 206, several or malformed ones ignored."""

from __future__ import annotations

import re

_SINGLE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def _position(digits: str) -> int:
    # A position of over 19 digits is past the end of any file; int() refuses over 4,300.
    significant = digits.lstrip("0") or "0"
    return int(significant) if len(significant) <= 19 else 2**63


class RangeNotSatisfiable(Exception):
    """The range starts past the end of the file: the answer is 416."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte a Range header asks for, or None to send everything.

    A header that is absent, malformed, in another unit or asks for several ranges is ignored,
    as the RFC allows. Raises RangeNotSatisfiable for a range no byte of the file falls into.
    """
    if not header:
        return None
    match = _SINGLE.match(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # "-N": the last N bytes
        suffix = _position(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - suffix), size - 1
    start = _position(first)
    if last and _position(last) < start:
        return None  # "5-2" is not a range at all
    if start >= size:
        raise RangeNotSatisfiable
    return start, min(_position(last), size - 1) if last else size - 1
