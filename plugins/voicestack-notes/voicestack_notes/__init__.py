"""voicestack notes: the model saves and searches the user's notes; a UI watches `notes.list`.

The tools go through `ctx`: `save_note` writes with `ctx.write`, one mutation of the group
commit, so every watcher of `notes.list` sees the note as soon as it commits; `search_notes` reads
a snapshot with `ctx.read`. Notes belong to the user who saved them; administrators, and calls
without a user, see every note.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from voicestack import (
    Caller,
    Migration,
    QueryCtx,
    ReadDB,
    ToolCtx,
    WriteDB,
    match_expression,
    query,
    tool,
)

MIGRATIONS = [
    Migration(
        # The notes themselves; thread_id and user_id say where and by whom a note was saved
        # (no foreign keys: a note outlives its thread, and the plugin must not depend on the
        # agent's schema).
        "notes",
        """
        CREATE TABLE notes (
            id INTEGER PRIMARY KEY,
            thread_id TEXT,
            user_id TEXT,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX notes_by_thread ON notes(thread_id, id);
        CREATE INDEX notes_by_user ON notes(user_id, id);
        """,
    ),
    Migration(
        # Full-text search over title and body, ranked, with stemming ("passwords" finds
        # "password"). External content keeps the text once, in `notes`; the triggers keep
        # the index in step with every insert, update and delete.
        "notes_search",
        """
        CREATE VIRTUAL TABLE notes_fts USING fts5(
            title, body, content='notes', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER notes_fts_insert AFTER INSERT ON notes BEGIN
            INSERT INTO notes_fts(rowid, title, body) VALUES (new.id, new.title, new.body);
        END;
        CREATE TRIGGER notes_fts_delete AFTER DELETE ON notes BEGIN
            INSERT INTO notes_fts(notes_fts, rowid, title, body)
            VALUES ('delete', old.id, old.title, old.body);
        END;
        CREATE TRIGGER notes_fts_update AFTER UPDATE ON notes BEGIN
            INSERT INTO notes_fts(notes_fts, rowid, title, body)
            VALUES ('delete', old.id, old.title, old.body);
            INSERT INTO notes_fts(rowid, title, body) VALUES (new.id, new.title, new.body);
        END;
        """,
    ),
]

_COLUMNS = "notes.id, notes.thread_id, notes.user_id, notes.title, notes.body, notes.created_at"


def _note(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "threadId": row["thread_id"],
        "userId": row["user_id"],
        "title": row["title"],
        "body": row["body"],
        "createdAt": row["created_at"],
    }


def _visible_to(user: Caller | None) -> tuple[str, tuple[str, ...]]:
    if user is None or user.is_admin:
        return "1", ()
    return "notes.user_id = ?", (user.id,)


class SaveNoteArgs(BaseModel):
    """A note to save."""

    model_config = ConfigDict(str_strip_whitespace=True)

    title: str = Field(min_length=1, max_length=200, description="A short title.")
    body: str = Field(min_length=1, max_length=10_000, description="The note's text.")


class SearchNotesArgs(BaseModel):
    """What to look for in the notes."""

    query: str = Field(min_length=1, max_length=500, description="Words to look for.")
    limit: int = Field(5, ge=1, le=20, description="The most notes to return.")


class ListNotesArgs(BaseModel):
    """Which notes to list."""

    thread_id: str | None = Field(None, alias="threadId", description="Only this thread's.")
    limit: int = Field(50, ge=1, le=200)


@tool
async def save_note(ctx: ToolCtx, args: SaveNoteArgs) -> dict[str, Any]:
    """Save a note for the user (a title and a body), to be found later with search_notes."""
    user_id = ctx.user.id if ctx.user is not None else None

    def insert(db: WriteDB) -> int:
        return db.execute(
            "INSERT INTO notes(thread_id, user_id, title, body, created_at) VALUES (?, ?, ?, ?, ?)",
            (ctx.thread_id, user_id, args.title, args.body, time.time()),
        ).last_rowid

    return {"id": await ctx.write(insert), "title": args.title}


@tool
async def search_notes(ctx: ToolCtx, args: SearchNotesArgs) -> list[dict[str, Any]]:
    """Search the user's saved notes for words in their title or body; best matches first."""
    match = match_expression(args.query)
    if match is None:
        raise ValueError("The query has no words: send words that appear in the note.")
    where, params = _visible_to(ctx.user)

    def search(db: ReadDB) -> list[dict[str, Any]]:
        # Title words weigh five times body words in the ranking.
        return db.all(
            f"SELECT {_COLUMNS} FROM notes_fts JOIN notes ON notes.id = notes_fts.rowid "
            f"WHERE notes_fts MATCH ? AND {where} "
            "ORDER BY bm25(notes_fts, 5.0, 1.0), notes.id DESC LIMIT ?",
            (match, *params, args.limit),
        )

    return [_note(row) for row in await ctx.read(search)]


@query("notes.list")
def list_notes(ctx: QueryCtx, args: ListNotesArgs) -> list[dict[str, Any]]:
    """The caller's notes, newest first, optionally only those saved in one thread."""
    where, params = _visible_to(ctx.user)
    if args.thread_id is not None:
        where += " AND notes.thread_id = ?"
        params = (*params, args.thread_id)
    rows = ctx.db.all(
        f"SELECT {_COLUMNS} FROM notes WHERE {where} ORDER BY notes.id DESC LIMIT ?",
        (*params, args.limit),
    )
    return [_note(row) for row in rows]
