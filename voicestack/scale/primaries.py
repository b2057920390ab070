"""The primary processes an edge hears from: which are alive and serving, and which one is a
thread's home.

Primaries say hello every fraction of a second, and say whether they still serve (a draining one
no longer takes new calls or streams). With several primaries serving at once, every edge opens
a given thread on the same one, its home (`home_primary`), so that they share one stream of it
there rather than one on each primary. When a primary comes (or comes back, or serves again),
the edge moves the threads that primary is now home to (`on_change`), so that an edge that
opened a thread before it heard of that primary does not keep a second stream of it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable

from voicestack.scale import subjects


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
        self._draining: set[str] = set()
        self._unanswered: dict[str, float] = {}  # primary id -> until when it is passed over
        # How many primary processes this edge has heard of: a new one may hold a database
        # restored from before what the edge learnt (voicestack/scale/refused_credentials.py).
        self.heard = 0
        self.on_change: list[Callable[[], None]] = []  # a primary came, or serves again

    def hello(self, primary: str, serving: bool = True) -> None:
        """`primary` said hello (or answered a stream): alive, and serving or draining."""
        now = self._clock()
        was_live = self._live(primary, now)
        if primary not in self._seen:
            self.heard += 1
        self._seen[primary] = now
        if serving:
            self._draining.discard(primary)
        else:
            self._draining.add(primary)
        if not was_live and self._live(primary, now):
            for changed in self.on_change:
                changed()

    def known(self, primary: str) -> bool:
        """Whether this edge has heard of `primary` at all."""
        return primary in self._seen

    def gone(self, primary: str) -> bool:
        """Whether `primary` has said nothing for PRIMARY_GONE_S (one never heard of has not)."""
        now = self._clock()
        return now - self._seen.get(primary, now) > subjects.PRIMARY_GONE_S

    def unanswered(self, primary: str) -> None:
        """`primary` did not answer an opening: pass it over for PRIMARY_GONE_S."""
        self._unanswered[primary] = self._clock() + subjects.PRIMARY_GONE_S

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
            and primary not in self._draining
            and self._unanswered.get(primary, 0.0) <= now
        )
