"""CommitObserver: something that hears of every batch of commits touching its tables.

The hub calls observers once per batch; the reply runner, the scheduler and the access guard
implement the protocol. It lives beside the change feed because the hub (reactive) and the
scheduler both need it, and those siblings may not import each other.

`collect` runs inside the batch's snapshot (on the hub's reader thread, or on the event loop for
a small batch: it must not block), with the batch's commits that touched `tables`; `deliver`
runs on the event loop with what `collect` returned. An observer registered as a gate (the
access guard) is delivered before anything else of its batch, so that the streams it holds or
ends get nothing of the batch's version; every other observer is delivered after the batch's
query values and feed events went out.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from voicestack.store.changes import ChangeSet
from voicestack.store.readers import Snapshot

Collected = TypeVar("Collected")


class CommitObserver(Protocol[Collected]):
    """Reads what a batch of commits changed in their snapshot, then acts on it."""

    @property
    def tables(self) -> frozenset[str]:
        """The tables whose commits this observer hears of."""
        ...

    @property
    def active(self) -> bool:
        """False while nothing listens: the hub then skips batches that only touch `tables`."""
        ...

    def collect(self, snapshot: Snapshot, changes: list[ChangeSet]) -> Collected:
        """Read, in the batch's snapshot, what the batch's commits mean to this observer."""
        ...

    def deliver(self, collected: Collected) -> None:
        """Act on what `collect` read (on the event loop)."""
        ...
