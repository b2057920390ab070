"""Row ids such as `thr_24dc06746b3089854c03`: a prefix, then 20 hex digits that begin with
the time.

An index over random ids takes each new row on a random page, so a commit of many new rows
changed one page of that index per row, and the WAL, its checkpoints and a Litestream replica
carried every one of them. Ids that begin with the time land at the right-hand edge of their
indexes, where the rows of one commit share pages. With `threads.create` under load (three
indexes over the thread's id), the server wrote 33 KiB per create with random ids and 8 KiB with
these (bench/results/create-cost.md).

The 20 digits are 9 of the time in milliseconds, modulo 2**36 (it wraps every 795 days, which
only moves where the next ids land), then 11 random ones: 44 bits from `secrets`, so an id
cannot be guessed from another. One process never makes the same id twice within a millisecond;
two processes would need the same 44 bits in the same millisecond, and the row's primary key
refuses that rather than reuse an id.
"""

from __future__ import annotations

import secrets
import threading
import time

TIME_DIGITS = 9
RANDOM_BITS = 44
_TIME_MASK = (1 << (TIME_DIGITS * 4)) - 1
_NS_PER_MS = 1_000_000


class _Tails:
    """The random parts handed out in the current millisecond, so none is handed out twice."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._millisecond = -1
        self._given: set[int] = set()

    def take(self, millisecond: int) -> int:
        """A random tail not yet given out in `millisecond`."""
        with self._lock:
            if millisecond != self._millisecond:
                self._millisecond = millisecond
                self._given.clear()
            tail = secrets.randbits(RANDOM_BITS)
            while tail in self._given:
                tail = secrets.randbits(RANDOM_BITS)
            self._given.add(tail)
            return tail


_tails = _Tails()


def new_id(prefix: str) -> str:
    """A fresh id `{prefix}_` + 20 hex digits: ids made later sort after earlier ones (to the
    millisecond, until the clock's digits wrap), the last 44 bits are random, and this process
    never makes the same id twice."""
    millisecond = (time.time_ns() // _NS_PER_MS) & _TIME_MASK
    tail = _tails.take(millisecond)
    return f"{prefix}_{millisecond:09x}{tail:011x}"
