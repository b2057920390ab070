"""The Store: one SQLite file, one writer thread with group commit, a pool of readers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import apsw

from voicestack.store.changes import ChangeSet, latest_version
from voicestack.store.commit_notices import CommitNotices
from voicestack.store.connection import open_connection
from voicestack.store.db import WriteDB
from voicestack.store.loop_commits import LoopCommits
from voicestack.store.migrations import CORE_MIGRATIONS, Migration, migrate_app, migrate_core
from voicestack.store.readers import ReaderConnection, ReaderPool, Snapshot
from voicestack.store.write_jobs import WriteResult
from voicestack.store.write_lock import WriteLock
from voicestack.store.writer import CommitListener, Writer

log = logging.getLogger(__name__)

T = TypeVar("T")


class Store:
    """A voicestack database: migrations on open, serialized writes, pooled snapshot reads.

    Litestream-compatible by construction: WAL mode is never left, checkpoints are PASSIVE ones
    at SQLite's autocheckpoint threshold, made by the writer thread (or none with
    `autocheckpoint=False`), and nothing runs VACUUM.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        readers: int = 4,
        autocheckpoint: bool = True,
        log_keep: int = 10_000,
        max_batch: int = 256,
        migrations: Sequence[Migration] = CORE_MIGRATIONS,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_conn = open_connection(self.path)
        if not autocheckpoint:
            # Litestream then owns checkpoints; SQLite must not run its own.
            self._write_conn.execute("PRAGMA wal_autocheckpoint=0")
        migrate_core(self._write_conn, migrations)
        # Tells the other processes on this file of each commit (None where that cannot work).
        self.notices = CommitNotices.open(self.path)
        self._writer: Writer | None = None
        self._loop_commits: LoopCommits | None = None
        self._readers = ReaderPool(self.path, readers)
        self._log_keep = log_keep
        self._max_batch = max_batch
        self._closed = False

    def migrate_app(self, app: str, migrations: Sequence[Migration]) -> int:
        """Apply an app's migrations (before `start`); returns how many ran."""
        if self._writer is not None:
            raise RuntimeError("App migrations run before the store starts serving writes.")
        return migrate_app(self._write_conn, app, migrations)

    def start(self) -> None:
        """Start the writer thread; from now on every write goes through `write`."""
        if self._writer is None:
            self._writer = Writer(
                self._write_conn,
                self._max_batch,
                self._log_keep,
                WriteLock(self.path),
            )
            self._loop_commits = LoopCommits(self._writer)
            if self.notices is not None:
                notices = self.notices
                self._writer.add_listener(lambda _changeset: notices.notify())
            self._writer.start()

    @property
    def writer(self) -> Writer:
        """The running writer (raises when the store is not started)."""
        if self._writer is None:
            raise RuntimeError("The store is not started.")
        return self._writer

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Call `listener(changeset)` on the writer thread after every commit that changed rows."""
        self.writer.add_listener(listener)

    def add_loop_commit_listener(self, listener: CommitListener) -> None:
        """Call `listener(changeset)` on an event loop's thread after every commit that loop
        made itself, once the writer is free again and before the commit's callers are told
        (Writer.add_loop_listener)."""
        self.writer.add_loop_listener(listener)

    async def write(
        self, fn: Callable[[WriteDB], T], on_loop: bool = False, slow_s: float = 0.0
    ) -> WriteResult[T]:
        """Run `fn(db)` as one mutation of the next group commit; resolves after COMMIT.

        `on_loop`: `fn` is short, so it may run on this loop's thread, committed with the other
        writes of this loop turn when nothing else is writing (voicestack/store/loop_commits.py);
        else it runs on the writer thread. `slow_s` (with `on_loop` only): 0 for a quick `fn`
        (a quarter of a millisecond or less), else how long it is expected to take (at most a
        millisecond); the slower writes of one loop turn share the loop while these add up to
        no more than SLOW_BUDGET_S."""
        if on_loop and self._loop_commits is not None:
            return await self._loop_commits.submit(fn, slow_s)
        return await self.writer.submit_async(fn)

    def write_sync(self, fn: Callable[[WriteDB], T]) -> WriteResult[T]:
        """Like `write`, for callers on other threads; blocks until COMMIT."""
        return self.writer.submit(fn).result()

    async def read(self, fn: Callable[[Snapshot], T]) -> T:
        """Run `fn(snapshot)` on a pooled reader inside one read transaction."""
        return await self._readers.read(fn)

    def read_sync(self, fn: Callable[[Snapshot], T]) -> T:
        """Like `read`, blocking the calling thread."""
        return self._readers.read_sync(fn)

    def reader(self) -> ReaderConnection:
        """A dedicated reader connection the caller owns and must close."""
        return ReaderConnection(self.path)

    def version(self) -> int:
        """The newest committed version."""
        return self.read_sync(lambda snapshot: snapshot.version)

    def close(self) -> None:
        """Drain the writer (every queued mutation commits), close readers, then the file."""
        if self._closed:
            return
        self._closed = True
        if self._loop_commits is not None:
            self._loop_commits.hand_over()
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
            self._loop_commits = None
        self._readers.close()
        self._write_conn.close()
        if self.notices is not None:
            self.notices.close()
        log.info("closed %s", self.path)


def integrity_check(conn: apsw.Connection) -> list[str]:
    """SQLite's integrity check: ["ok"] for a healthy database."""
    return [row[0] for row in conn.execute("PRAGMA integrity_check")]


__all__ = ["ChangeSet", "Snapshot", "Store", "WriteResult", "integrity_check", "latest_version"]
