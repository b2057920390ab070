"""The app `bench/writes.py` loads into the server: one table and one small insert mutation."""

from __future__ import annotations

from pydantic import BaseModel

from voicestack import MutationCtx, mutation

MIGRATIONS = [
    "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
]

INSERT = "INSERT INTO notes(body) VALUES (?)"


class NoteArgs(BaseModel):
    """The note's text."""

    body: str


@mutation("notes.add")
def add_note(ctx: MutationCtx, args: NoteArgs) -> int:
    """Insert one note; returns its id."""
    return ctx.db.execute(INSERT, (args.body,)).last_rowid
