"""Opening a connection with the settings every voicestack connection shares."""

from __future__ import annotations

from pathlib import Path

import apsw

# Litestream takes short write locks; apsw.bestpractice's 100 ms would surface them as errors.
BUSY_TIMEOUT_MS = 5000


def open_connection(path: Path, *, readonly: bool = False) -> apsw.Connection:
    """Open `path` in WAL mode with NORMAL sync, foreign keys and a 5 s busy timeout.

    A read-only connection also sets `query_only`, so a query can never write even by mistake.
    """
    flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    if readonly:
        flags = apsw.SQLITE_OPEN_READONLY
    conn = apsw.Connection(str(path), flags=flags)
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    if not readonly:
        # Setting WAL once is persistent in the file; never switching back keeps Litestream happy.
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
        if mode.lower() != "wal":
            raise RuntimeError(f"Could not put {path} in WAL mode (it reports {mode!r}).")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    return conn
