"""HTTP byte ranges (RFC 9110 §14): one range served as 206, several or malformed ones ignored."""

from __future__ import annotations

import re

_SINGLE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


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
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - suffix), size - 1
    start = int(first)
    if last and int(last) < start:
        return None  # "5-2" is not a range at all
    if start >= size:
        raise RangeNotSatisfiable
    return start, min(int(last), size - 1) if last else size - 1
