"""A pool of read-only connections, each on its own thread, each read in one snapshot."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import apsw

from voicestack.store.changes import latest_version
from voicestack.store.connection import open_connection
from voicestack.store.db import ReadDB
from voicestack.store.readset import StatementTables

T = TypeVar("T")


@dataclass(slots=True)
class Snapshot:
    """One read transaction: every read through it sees the database as of `version`."""

    conn: apsw.Connection
    statements: StatementTables
    version: int

    def db(self) -> ReadDB:
        """A fresh ReadDB in this snapshot, recording its own read set."""
        return ReadDB(self.conn, self.statements)


class ReaderConnection:
    """A read-only connection with its read-set tracker."""

    def __init__(self, path: Path) -> None:
        self.conn = open_connection(path, readonly=True)
        self.statements = StatementTables(self.conn)

    def begin(self) -> Snapshot:
        """Open a read transaction and pin its snapshot (SQLite pins it at the first read)."""
        self.conn.execute("BEGIN")
        return Snapshot(self.conn, self.statements, latest_version(self.conn))

    def end(self) -> None:
        """Close the read transaction, releasing the snapshot."""
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")

    def read(self, fn: Callable[[Snapshot], T]) -> T:
        """Run `fn` inside one read transaction."""
        snapshot = self.begin()
        try:
            return fn(snapshot)
        finally:
            self.end()

    def close(self) -> None:
        """Close the connection."""
        self.end()
        self.conn.close()


class ReaderPool:
    """N threads, each owning one ReaderConnection; reads are submitted from asyncio."""

    def __init__(self, path: Path, size: int) -> None:
        self._path = path
        self._local = threading.local()
        self._connections: list[ReaderConnection] = []
        self._lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, size), thread_name_prefix="voicestack-reader"
        )

    def _connection(self) -> ReaderConnection:
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = ReaderConnection(self._path)
            self._local.reader = reader
            with self._lock:
                self._connections.append(reader)
        return reader

    async def read(self, fn: Callable[[Snapshot], T]) -> T:
        """Run `fn(snapshot)` on a pooled reader thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self._connection().read(fn))

    def read_sync(self, fn: Callable[[Snapshot], T]) -> T:
        """Run `fn(snapshot)` on a pooled reader thread, blocking the calling thread."""
        return self._executor.submit(lambda: self._connection().read(fn)).result()

    def close(self) -> None:
        """Wait for running reads, then close every connection."""
        self._executor.shutdown(wait=True)
        with self._lock:
            for reader in self._connections:
                reader.close()
            self._connections.clear()
