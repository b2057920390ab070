"""The app `bench/fanout.py` loads into the server: one table of ticks, one query, one mutation.

`ticks.add` stores `time.time()` in the row it inserts, just before the commit, so a subscriber
that receives the row can compute commit-to-receive latency as its receive time minus `at`
(client and server run on the same machine and share its clock).
"""

from __future__ import annotations

import time

from voicestack import MutationCtx, QueryCtx, mutation, query

MIGRATIONS = [
    "CREATE TABLE ticks (id INTEGER PRIMARY KEY, at REAL NOT NULL)",
]


@query("ticks.latest")
def latest_tick(ctx: QueryCtx) -> dict | None:
    """The newest tick, `{"id", "at"}`, or null before the first one."""
    return ctx.db.one("SELECT id, at FROM ticks ORDER BY id DESC LIMIT 1")


@mutation("ticks.add")
def add_tick(ctx: MutationCtx) -> dict:
    """Insert a tick stamped with the current time; returns `{"id", "at"}`."""
    at = time.time()
    result = ctx.db.execute("INSERT INTO ticks(at) VALUES (?)", (at,))
    return {"id": result.last_rowid, "at": at}
