"""The commit inbox: every ChangeSet the hub must see, once, from this process or another.

This process's writer announces its commits directly; commits of other processes on the same
file are found through `PRAGMA data_version` and the `_changes` log. Both may announce the same
commit, so the inbox keeps a watermark: every version up to `received` is known.
"""

from __future__ import annotations

import asyncio
import contextlib

import apsw

from voicestack.store.changes import ChangeSet, latest_version, read_log

# A batch whose commits changed at most this many (listed) rows, that re-runs no query and
# admits no subscriber, reads what its listeners need on the event loop itself.
INLINE_ROWS = 256


class CommitInbox:
    """Collects ChangeSets in version order, without duplicates, for the hub's batch loop."""

    def __init__(self, received: int = 0) -> None:
        self.received = received
        self.pending: list[ChangeSet] = []
        self._ahead: set[int] = set()
        self._arrived = asyncio.Event()
        self._data_version: int | None = None

    def put(self, changeset: ChangeSet) -> bool:
        """Take a committed ChangeSet (on the event loop); False when it was already known.

        Versions are consecutive, so `received` is the version up to which every commit is
        known, and `_ahead` holds the ones received beyond a gap still to be filled.
        """
        version = changeset.version
        if version <= self.received or version in self._ahead:
            return False
        self.pending.append(changeset)
        self._ahead.add(version)
        while self.received + 1 in self._ahead:
            self.received += 1
            self._ahead.discard(self.received)
        self._arrived.set()
        return True

    def take(self, upto: int) -> list[ChangeSet]:
        """Remove and return the pending ChangeSets up to version `upto`."""
        taken = [cs for cs in self.pending if cs.version <= upto]
        self.pending = [cs for cs in self.pending if cs.version > upto]
        return taken

    def take_all(self) -> list[ChangeSet]:
        """Remove and return every pending ChangeSet."""
        taken, self.pending = self.pending, []
        return taken

    async def wait_for(self, version: int, timeout_s: float) -> bool:
        """Wait until every commit up to `version` is known; False after `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.received < version:
            self._arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return True

    def read_foreign(self, conn: apsw.Connection) -> list[ChangeSet]:
        """Commits in the log that this inbox has not seen (call on the reader's thread).

        Cheap when nothing changed: `PRAGMA data_version` only moves when another connection
        (our own writer included) committed.
        """
        data_version: int = conn.execute("PRAGMA data_version").get
        if data_version == self._data_version:
            return []
        self._data_version = data_version
        received = self.received
        if latest_version(conn) <= received:
            return []
        return read_log(conn, received, None)  # put() drops the ones already known


def small_changes(changes: list[ChangeSet]) -> bool:
    """Whether the commits list every row they changed, and few of them."""
    rows = 0
    for changeset in changes:
        if len(changeset.rows) < len(changeset.tables):
            return False  # a table changed in rows too many to list
        rows += sum(map(len, changeset.rows.values()))
        if rows > INLINE_ROWS:
            return False
    return True
