"""The app the `serve --workers` tests serve: values that say which server process made them.

A query answering `os.getpid()` is not deterministic on purpose: it tells a test which worker
took a request, and a watch of `marks.seen` tells which worker serves that stream.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, Field

from voicestack import MutationCtx, QueryCtx, mutation, query

MIGRATIONS = [
    "CREATE TABLE marks (id INTEGER PRIMARY KEY, note TEXT NOT NULL, pid INTEGER NOT NULL)",
]


class MarkArgs(BaseModel):
    """A new mark."""

    note: str = Field(min_length=1, max_length=200)


@query("pids.pid")
def pid(ctx: QueryCtx) -> int:
    """The process id of the server process that ran this query."""
    return os.getpid()


@query("marks.seen")
def seen(ctx: QueryCtx) -> dict:
    """`{"pid", "marks"}`: the process that ran the query, and every mark, oldest first."""
    marks = ctx.db.all("SELECT id, note, pid FROM marks ORDER BY id")
    return {"pid": os.getpid(), "marks": marks}


@mutation("marks.add")
def add_mark(ctx: MutationCtx, args: MarkArgs) -> dict:
    """Insert a mark stamped with the writing process's id; returns `{"id", "pid"}`."""
    result = ctx.db.execute("INSERT INTO marks(note, pid) VALUES (?, ?)", (args.note, os.getpid()))
    return {"id": result.last_rowid, "pid": os.getpid()}
