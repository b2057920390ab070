"""Opening a connection with the settings every voicestack connection shares."""

from __future__ import annotations

import functools
import importlib.util
import logging
import time
from pathlib import Path

import apsw

log = logging.getLogger(__name__)

# Litestream takes short write locks; apsw.bestpractice's 100 ms would surface them as errors.
BUSY_TIMEOUT_MS = 5000


# Why sqlite-vec is not loaded, from the last attempt (None: it loaded, or none was made yet).
_unavailable: str | None = None


class DatabaseNotWritable(RuntimeError):
    """The database file, or the directory its WAL files go in, cannot be written."""


def open_connection(path: Path, *, readonly: bool = False) -> apsw.Connection:
    """Open `path` in WAL mode with NORMAL sync, foreign keys and a 5 s busy timeout.

    A read-only connection also sets `query_only`, so a query can never write even by mistake.
    A writing connection on a file or directory it cannot write raises DatabaseNotWritable
    here, before anything tries to write.
    """
    if readonly:
        return _configure(apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY), path)
    try:
        conn = apsw.Connection(
            str(path), flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        )
        # SQLite opens a file it may not write read-only, without a word.
        if conn.readonly("main"):
            raise apsw.ReadOnlyError("the file is read-only")
        return _configure(conn, path, writer=True)
    except (apsw.CantOpenError, apsw.ReadOnlyError) as exc:
        raise DatabaseNotWritable(
            f"Cannot write the database {path} ({exc}). voicestack needs to write the file and"
            f" to create {path.name}-wal and {path.name}-shm beside it: check the permissions"
            " of both, or choose another file with --db."
        ) from None


def load_vector_search(conn: apsw.Connection) -> None:
    """Load sqlite-vec on `conn` (its `vec0` tables hold memory's vectors), when installed.

    Never raises: when the package is missing or its library will not load, memory is
    full-text only, and `vector_search_unavailable()` says why (a failed load is logged once).
    """
    global _unavailable
    library = _vector_library()
    if library is None:
        _unavailable = "sqlite-vec is not installed"
        return
    try:
        conn.enable_load_extension(True)
        try:
            conn.load_extension(library)
        finally:
            conn.enable_load_extension(False)
    except (apsw.ExtensionLoadingError, OSError) as exc:
        reason = f"sqlite-vec's library does not load: {exc}"
        if _unavailable != reason:
            log.warning("memory is full-text only: %s", reason)
        _unavailable = reason
        return
    _unavailable = None


@functools.cache
def _vector_library() -> str | None:
    """The path of sqlite-vec's loadable library (without its suffix, as `load_extension` takes
    it), or None when the package is missing (optional: memory is then full-text only).

    The library lies beside the package's `__init__`, where `sqlite_vec.loadable_path()` points.
    It is found without running that `__init__`, which imports numpy when it is installed: about
    0.15 s of a server's start, for a path.
    """
    try:
        spec = importlib.util.find_spec("sqlite_vec")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return str(Path(spec.origin).parent / "vec0")


def vector_search_unavailable() -> str:
    """Why sqlite-vec did not load on the last connection opened ("" when it did, or none was
    opened yet)."""
    return _unavailable or ""


def _configure(conn: apsw.Connection, path: Path, *, writer: bool = False) -> apsw.Connection:
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    load_vector_search(conn)
    if writer:
        mode = _switch_to_wal(conn)
        if mode.lower() != "wal":
            raise RuntimeError(f"Could not put {path} in WAL mode (it reports {mode!r}).")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    if not writer:
        conn.execute("PRAGMA query_only=ON")
    return conn


def _switch_to_wal(conn: apsw.Connection) -> str:
    """Put the file in WAL mode (persistent in the file; never switching back keeps Litestream
    happy) and return the journal mode it reports.

    On a new file that several processes open at once, the switch upgrades a read lock to a
    write lock, and SQLite refuses that at once, without its busy handler, when another
    process is upgrading too (waiting could deadlock). So a refusal is retried here, within
    the busy timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            return str(conn.pragma("journal_mode", "WAL"))
        except apsw.BusyError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
