"""Turns between processes that write one database file (`serve --workers`, a second primary).

SQLite lets one writer in at a time and makes the others wait in its busy handler, which sleeps
and retries: 1, 2, 5, 10 ms and more. Under a steady write load that sleeping, not the writes,
set the p99 (about 500 ms at 50 connections with two workers, bench/peers.py). Each writer thread
therefore takes an exclusive flock on `<database>-writelock` around its transaction: a waiting
process goes the moment the other one is done. (Polling for it every 0.1–1 ms instead cost a
tenth of the creates and put p99 back at 100–130 ms.) The blocking flock runs on a thread of
its own, so that the writer can stop waiting for it; a free lock is taken by the writer
itself, with no hop to that thread.

SQLite's own locking still guards the data; this only orders our writers. So whatever goes wrong
with the lock makes a writer go on without it, back to SQLite's busy handler, never fail: a lock
file that cannot be opened or locked (a read-only folder, a file system without flock) is said
once in the log, and a holder that keeps it longer than SQLite's busy timeout (a stopped
process) is passed by. A process that does not take it (the CLI, a backup) merely meets the busy
handler. Deleting the file while servers run makes processes started afterwards lock a new one:
still safe, but those no longer take turns with the older ones until they restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

from voicestack.store.connection import BUSY_TIMEOUT_MS

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Turn:
    granted: threading.Event = field(default_factory=threading.Event)
    given_up: bool = False  # the writer stopped waiting and went on without the lock
    refused: bool = False  # the lock cannot be taken at all


class WriteLock:
    """An exclusive cross-process lock, opened lazily in the process that uses it."""

    def __init__(self, database: Path, timeout_s: float = BUSY_TIMEOUT_MS / 1000) -> None:
        """The lock of the database file at `database`; nothing is opened yet."""
        self.path = Path(f"{database}-writelock")
        self.timeout_s = timeout_s
        self._fd: int | None = None
        self._broken = False  # it could not be opened or locked: writers go on without it
        self._turns: queue.SimpleQueue[_Turn | None] = queue.SimpleQueue()
        self._taker: threading.Thread | None = None
        self._guard = threading.Lock()

    def acquire(self) -> bool:
        """Hold the lock, waiting up to `timeout_s`; False when this writer goes on without it
        (SQLite's busy handler then orders the writers)."""
        fd = None if self._broken else self._open()
        if fd is None:
            return False
        try:
            # Free (always, for a lone process): taken here, with no hop to the taking thread.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            pass  # held elsewhere (or failing: the taking thread says so)
        turn = _Turn()
        self._turns.put(turn)
        if turn.granted.wait(self.timeout_s):
            return not turn.refused
        with self._guard:
            if turn.granted.is_set():
                return not turn.refused
            turn.given_up = True
        log.warning(
            "another process has held %s for over %.0f s; writing without it",
            self.path,
            self.timeout_s,
        )
        return False

    def try_acquire(self) -> bool:
        """Hold the lock if it is free now, without waiting: False when another process holds
        it. True also when this writer goes on without it (see `acquire`)."""
        fd = None if self._broken else self._open()
        if fd is None:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def release(self) -> None:
        """Let the next process in (after an `acquire` that returned True)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Stop the taking thread and close the file (releasing the lock if held)."""
        if self._taker is not None:
            self._turns.put(None)
            self._taker.join(self.timeout_s)
            self._taker = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int | None:
        if self._fd is None and not self._broken:
            try:
                # Opened here, in the writing process: a descriptor inherited across a fork
                # would share the lock with the parent instead of excluding it.
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                self._give_up(f"it cannot be opened: {exc}")
                return None
            self._taker = threading.Thread(
                target=self._take_turns, args=(self._fd,), name="voicestack-write-lock", daemon=True
            )
            self._taker.start()
        return self._fd

    def _take_turns(self, fd: int) -> None:
        while (turn := self._turns.get()) is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                self._give_up(f"it cannot be locked: {exc}")
                with self._guard:
                    turn.refused = True
                    turn.granted.set()
                return
            with self._guard:
                if not turn.given_up:
                    turn.granted.set()
                    continue
            with contextlib.suppress(OSError):  # closed meanwhile, at shutdown
                fcntl.flock(fd, fcntl.LOCK_UN)  # the writer went on without it meanwhile

    def _give_up(self, why: str) -> None:
        self._broken = True
        log.warning(
            "writers of this database take turns through %s, but %s; this process writes"
            " without it (SQLite's busy handler still orders the writers)",
            self.path,
            why,
        )
