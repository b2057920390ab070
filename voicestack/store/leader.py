"""The leader lease: of all processes serving one database file, one runs replies and jobs.

The lease is an exclusive `flock` on `<db>.leader` beside the database. The holder keeps it
until it closes; when it dies the operating system releases the lock, and a waiting process,
trying again every `retry_s`, takes over. No heartbeat rows are written, so leadership costs the
database nothing.

A clean stop removes the file, while still holding its lock. A process that locked the file just
before it was removed holds a lock on a name nobody can find, so every acquirer checks, once
locked, that the path still names the file it locked.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

RETRY_S = 1.0


def lease_path(db: Path) -> Path:
    """The lock file of the database `db`."""
    return db.with_name(db.name + ".leader")


class LeaderLease:
    """Tries, and keeps trying, to become the one leader of a database file."""

    def __init__(self, db: Path, retry_s: float = RETRY_S) -> None:
        self.path = lease_path(db)
        self._retry_s = retry_s
        self._fd: int | None = None
        self._waiting: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        """True while this process is the leader."""
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; never blocks."""
        if self._fd is not None:
            return True
        for _ in range(3):  # the file may be removed under us by a leader that stops
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            if _names_file(self.path, fd):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return True
            os.close(fd)
        return False

    async def acquire(self, on_gain: Callable[[], Awaitable[None]]) -> bool:
        """Take the lease now and await `on_gain`, or keep trying in the background and await it
        once the lease is taken; returns True when this process leads already."""
        if self.try_acquire():
            await on_gain()
            return True
        log.info("another process leads %s; this one serves requests only", self.path)
        self._waiting = asyncio.get_running_loop().create_task(
            self._wait(on_gain), name="voicestack-leader"
        )
        return False

    async def _wait(self, on_gain: Callable[[], Awaitable[None]]) -> None:
        while not self.try_acquire():
            await asyncio.sleep(self._retry_s)
        log.info("took over as leader of %s", self.path)
        await on_gain()

    async def stop_waiting(self) -> None:
        """Stop trying to take the lease (a held lease stays held until `release`)."""
        if self._waiting is not None:
            self._waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._waiting
            self._waiting = None

    def release(self) -> None:
        """Give the lease up, so another process may lead."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):  # gone already, or a read-only directory
                self.path.unlink()
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _names_file(path: Path, fd: int) -> bool:
    """True when `path` is the file open as `fd` (not removed, nor replaced by another)."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
