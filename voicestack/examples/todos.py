"""A to-do list: the smallest useful voicestack app.

voicestack serve --app voicestack.examples.todos
auth="Authorization: Bearer $(cat voicestack.db.token)"
curl -N -H "$auth" 'http://127.0.0.1:8000/api/watch/todos.list'
curl -H "$auth" -X POST http://127.0.0.1:8000/api/mutation/todos.add -d '{"args": {"text": "milk"}}'
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field

from voicestack import FunctionError, MutationCtx, QueryCtx, mutation, query

MIGRATIONS = [
    # One table; `done` is 0/1 because SQLite has no boolean type.
    """
    CREATE TABLE todos (
        id INTEGER PRIMARY KEY,
        text TEXT NOT NULL,
        done INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    )
    """,
]


class ListArgs(BaseModel):
    """Which to-dos to list."""

    include_done: bool = Field(True, alias="includeDone")


class AddArgs(BaseModel):
    """A new to-do."""

    text: str = Field(min_length=1, max_length=500)


class IdArgs(BaseModel):
    """One to-do, by id."""

    id: int


@query("todos.list")
def list_todos(ctx: QueryCtx, args: ListArgs) -> list[dict[str, Any]]:
    """Every to-do, oldest first."""
    where = "" if args.include_done else "WHERE done = 0"
    rows = ctx.db.all(f"SELECT id, text, done FROM todos {where} ORDER BY id")
    return [{**row, "done": bool(row["done"])} for row in rows]


@query("todos.count")
def count_todos(ctx: QueryCtx) -> int:
    """How many to-dos are not done."""
    return int(ctx.db.scalar("SELECT count(*) FROM todos WHERE done = 0"))


@mutation("todos.add")
def add_todo(ctx: MutationCtx, args: AddArgs) -> dict[str, Any]:
    """Add a to-do; returns its id."""
    result = ctx.db.execute(
        "INSERT INTO todos(text, created_at) VALUES (?, ?)", (args.text, time.time())
    )
    return {"id": result.last_rowid}


@mutation("todos.toggle")
def toggle_todo(ctx: MutationCtx, args: IdArgs) -> dict[str, Any]:
    """Flip a to-do between done and not done."""
    result = ctx.db.execute("UPDATE todos SET done = 1 - done WHERE id = ?", (args.id,))
    if result.changes == 0:
        raise FunctionError("not_found", f"No to-do has id {args.id}.", 404)
    return {"id": args.id}


@mutation("todos.clear")
def clear_done(ctx: MutationCtx) -> int:
    """Delete every finished to-do; returns how many."""
    return ctx.db.execute("DELETE FROM todos WHERE done = 1").changes
