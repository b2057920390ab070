"""A cheap look, from the event loop, for commits made through other connections of the file.

`PRAGMA data_version` moves when another connection (another process's, or this process's own
writer) commits. Asked on a connection of its own, with no busy timeout, it takes a few
microseconds and never sleeps on a lock, so an idle server can look often without handing
anything to another thread. When it moved, the change log's newest version tells whether the
commit is one the caller has not seen yet (this process's own commits it has).
"""

from __future__ import annotations

from pathlib import Path

import apsw

from voicestack.store.changes import latest_version


class DataVersionProbe:
    """`committed_after(version)`: whether the file may hold a commit newer than `version`."""

    def __init__(self, path: Path) -> None:
        self._conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        # A look that would wait (a crashed writer's WAL being recovered) says "maybe" at once
        # instead: the reader the caller then uses waits where waiting does no harm.
        self._conn.set_busy_timeout(0)
        self._conn.execute("PRAGMA cache_size=8")
        self._data_version: int | None = None

    def committed_after(self, version: int) -> bool:
        """False only when no connection committed since the last look that found nothing
        newer, or when the change log's newest commit is `version` or older; True otherwise,
        and on the first look.

        A True is not spent: until the caller's `version` reaches the log's newest, every
        look says True again, so a read that fell short (it failed, or ran in a snapshot
        older than the commit) is made good at the next look instead of never."""
        try:
            data_version: int = self._conn.execute("PRAGMA data_version").get
            if data_version == self._data_version:
                return False
            if latest_version(self._conn) > version:
                return True
            self._data_version = data_version
            return False
        except apsw.Error:
            return True

    def close(self) -> None:
        """Close the probe's connection."""
        self._conn.close()
