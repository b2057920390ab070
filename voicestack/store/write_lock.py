"""Turns between processes that write one database file (`serve --workers`, a second primary).

SQLite lets one writer in at a time and makes the others wait in its busy handler, which sleeps
and retries: 1, 2, 5, 10 ms and more. Under a steady write load that sleeping, not the writes,
set the p99 (about 500 ms at 50 connections with two workers, bench/peers.py). Each writer thread
therefore takes an exclusive flock on `<database>-writelock` around its transaction: a waiting
process wakes the moment the other one releases it. SQLite's own locking still guards the
data; this only orders our writers, so a process that does not take it (the CLI, a backup)
merely falls back to the busy handler. The file holds nothing and may be deleted at any time.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class WriteLock:
    """An exclusive, blocking, cross-process lock, opened lazily in the process that uses it."""

    def __init__(self, database: Path) -> None:
        """The lock of the database file at `database`; nothing is opened yet."""
        self.path = Path(f"{database}-writelock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Block until this process holds the lock."""
        if self._fd is None:
            # Opened here, in the writing process: a descriptor inherited across a fork would
            # share the lock with the parent instead of excluding it.
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        """Let the next process in."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the file (releasing the lock if held)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
