"""The primary processes an edge hears from: which are alive and serving, and which one is a
thread's home.

Primaries say hello every fraction of a second, and say whether they still serve (a draining one
no longer takes new calls or streams; one of an earlier version says nothing, and is nobody's
home, as it does not take openings on a subject of its own). With several primaries serving at
once, every edge opens a given thread on the same one, its home (`home_primary`), so that they
share one stream of it there rather than one on each primary. A home that does not answer an
opening is passed over for a while, longer each time in a row, and the thread opened on the
next primary in the same order. When a primary comes (or comes back, serves again, or is no
longer passed over), the edge moves the threads that primary is now home to (`on_change`), so
that an edge that opened a thread elsewhere meanwhile does not keep a second stream of it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable

from voicestack.scale import subjects

# The longest a primary that keeps failing its openings is passed over.
MAX_PASS_OVER_S = 120.0
# A primary silent this long is forgotten (when another one is first heard of).
FORGET_S = 3600.0


def home_primary(thread_id: str, primaries: Iterable[str]) -> str | None:
    """The primary of `primaries` that every edge opens thread `thread_id` on (rendezvous
    hashing: every edge that knows the same primaries picks the same one, and a primary that
    comes or goes moves only the threads it wins or held); None when there is none."""

    def weight(primary: str) -> bytes:
        return hashlib.sha256(f"{thread_id}\0{primary}".encode()).digest()

    return max(primaries, key=weight, default=None)


class Primaries:
    """What an edge knows of the primary processes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, float] = {}  # primary id -> when it last said hello
        self._not_serving: set[str] = set()
        self._unanswered: dict[str, float] = {}  # primary id -> until when it is passed over
        self._failures: dict[str, int] = {}  # openings it failed in a row
        # How many primary processes this edge has heard of: a new one may hold a database
        # restored from before what the edge learnt (voicestack/scale/refused_credentials.py).
        self.heard = 0
        self.on_change: list[Callable[[], None]] = []  # a primary came, or serves again

    def hello(self, primary: str, serving: bool = True) -> None:
        """`primary` said hello (or answered a stream): alive, and serving (a home for
        threads) or not."""
        now = self._clock()
        was_live = self._live(primary, now)
        if self._unanswered.get(primary, now) < now:
            del self._unanswered[primary]  # passed over until now: its threads go back
            was_live = False
        if primary not in self._seen:
            self.heard += 1
            self._forget_silent(now)
        self._seen[primary] = now
        if serving:  # draining, or of a version that opens nothing on a subject of its own
            self._not_serving.discard(primary)
        else:
            self._not_serving.add(primary)
        if not was_live and self._live(primary, now):
            for changed in self.on_change:
                changed()

    def _forget_silent(self, now: float) -> None:
        """Forget the primaries silent for FORGET_S (each restart is a new process id; one
        heard of again is counted anew, which only makes the edge ask again what it knew)."""
        for silent in [p for p, seen in self._seen.items() if now - seen > FORGET_S]:
            del self._seen[silent]
            self._not_serving.discard(silent)
            self._unanswered.pop(silent, None)
            self._failures.pop(silent, None)

    def known(self, primary: str) -> bool:
        """Whether this edge has heard of `primary` at all."""
        return primary in self._seen

    def gone(self, primary: str) -> bool:
        """Whether `primary` has said nothing for PRIMARY_GONE_S (one never heard of has not)."""
        now = self._clock()
        return now - self._seen.get(primary, now) > subjects.PRIMARY_GONE_S

    def unanswered(self, primary: str) -> None:
        """`primary` did not answer an opening: pass it over for PRIMARY_GONE_S, twice as
        long for each failure in a row (at most MAX_PASS_OVER_S)."""
        failures = self._failures.get(primary, 0)
        self._failures[primary] = failures + 1
        pass_over = min(subjects.PRIMARY_GONE_S * 2**failures, MAX_PASS_OVER_S)
        self._unanswered[primary] = self._clock() + pass_over

    def answered(self, primary: str) -> None:
        """`primary` answered an opening."""
        self._failures.pop(primary, None)

    def live(self) -> list[str]:
        """The primaries that said hello lately, serve, and have not failed to answer lately."""
        now = self._clock()
        return [primary for primary in self._seen if self._live(primary, now)]

    def home(self, thread_id: str) -> str | None:
        """The primary to open `thread_id` on: its home among the live ones (None: none)."""
        return home_primary(thread_id, self.live())

    def _live(self, primary: str, now: float) -> bool:
        seen = self._seen.get(primary)
        return (
            seen is not None
            and now - seen <= subjects.PRIMARY_GONE_S
            and primary not in self._not_serving
            and self._unanswered.get(primary, 0.0) <= now
        )
