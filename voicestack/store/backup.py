"""An online backup of a voicestack database through SQLite's backup API (apsw `Connection.backup`).

Safe while a server writes: each step copies some pages inside a short read transaction, and in
WAL mode readers never block the writer. When another process commits in between, SQLite starts
the copy over; after a few such restarts the rest is copied in one step (one read transaction,
still not blocking writers), so a busy server cannot starve the backup. The copy is written to a
temporary file beside the target and renamed into place only when complete, so a failed or
interrupted backup never leaves a half-written file at the target path.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import apsw

from voicestack.store.connection import BUSY_TIMEOUT_MS

ProgressCallback = Callable[[int, int], None]  # (pages copied, pages in total)

# Restarts tolerated before the rest of the copy is done in one step.
MAX_RESTARTS = 3
BUSY_RETRY_S = 0.05


@dataclass(frozen=True)
class BackupReport:
    """What a finished backup copied."""

    pages: int
    bytes: int
    restarts: int
    seconds: float


def step_pages(total: int) -> int:
    """Pages per step: about a hundred steps for the progress bar, at least 64 pages each."""
    return max(64, total // 100)


def open_source(path: Path) -> apsw.Connection:
    """Open an existing database to read it, without changing anything in it."""
    if not path.is_file():
        raise FileNotFoundError(f"No database at {path}.")
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    conn.execute("PRAGMA query_only=ON")
    return conn


def _copy(backup: apsw.Backup, on_progress: ProgressCallback) -> int:
    restarts = 0
    size = 0
    copied_before = 0
    while not backup.done:
        if restarts > MAX_RESTARTS:
            size = -1  # copy the rest in one step
        try:
            backup.step(size)
        except (apsw.BusyError, apsw.LockedError):
            time.sleep(BUSY_RETRY_S)
            continue
        total = backup.page_count
        copied = total - backup.remaining
        if size > 0 and copied <= copied_before and not backup.done:
            restarts += 1  # a commit by another connection made SQLite start over
        copied_before = copied
        size = step_pages(total) if size >= 0 else size
        on_progress(copied, total)
    return restarts


def backup_database(
    source: Path, target: Path, on_progress: ProgressCallback = lambda _c, _t: None
) -> BackupReport:
    """Copy the database at `source` to `target` (replacing it), reporting progress per step."""
    started = time.monotonic()
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    src = open_source(source)
    try:
        partial.unlink(missing_ok=True)
        dst = apsw.Connection(str(partial))
        try:
            with dst.backup("main", src, "main") as backup:
                restarts = _copy(backup, on_progress)
                pages = backup.page_count
        finally:
            dst.close()
        os.replace(partial, target)
    except BaseException:
        for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    return BackupReport(pages, target.stat().st_size, restarts, time.monotonic() - started)
