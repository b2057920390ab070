"""The app `bench/processes.py` loads: ticks whose values name the server process involved.

`ticks.latest` answers the newest tick with the pid of the process that ran the query, so a
subscriber knows which process serves its stream; `ticks.add` stamps `time.time()` just before
the commit and answers the pid that committed it. A delivery is then same-process or
cross-process, and its latency is its receive time minus `at` (one machine, one clock).
"""

from __future__ import annotations

import os
import time

from voicestack import MutationCtx, QueryCtx, mutation, query

MIGRATIONS = [
    "CREATE TABLE ticks (id INTEGER PRIMARY KEY, at REAL NOT NULL)",
]


@query("ticks.latest")
def latest_tick(ctx: QueryCtx) -> dict:
    """`{"pid", "tick"}`: this process's id and the newest tick `{"id", "at"}` (or null)."""
    tick = ctx.db.one("SELECT id, at FROM ticks ORDER BY id DESC LIMIT 1")
    return {"pid": os.getpid(), "tick": tick}


@mutation("ticks.add")
def add_tick(ctx: MutationCtx) -> dict:
    """Insert a tick stamped with the current time; returns `{"id", "at", "pid"}`."""
    at = time.time()
    result = ctx.db.execute("INSERT INTO ticks(at) VALUES (?)", (at,))
    return {"id": result.last_rowid, "at": at, "pid": os.getpid()}
