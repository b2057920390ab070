"""The vector index of semantic memory: what it holds, its sqlite-vec table, and its chunks.

`memory_index` says which model and vector size the stored vectors have. A server configured
with another model or size would mix incomparable vectors, and search would quietly return
nonsense, so it refuses to start (MemoryMismatch) and names `voicestack memory reindex`.

The vectors live in `memory_vectors`, a sqlite-vec `vec0` table whose rowid is the chunk's id
and whose `owner` (the chunk's thread, or `user:ID` for a user's own notes) lets a search
filter to what the caller may read inside the nearest-neighbour scan itself.
"""

from __future__ import annotations

import struct
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import apsw

from voicestack.scheduler.jobs import insert_job
from voicestack.store.db import ReadDB, WriteDB

VECTOR_TABLE = "memory_vectors"
REINDEX_COMMAND = "voicestack memory reindex"
BACKFILL_JOB = "memory.backfill"
# Vectors per vec0 storage blob. Each insert walks its blob's overflow pages to the vector's
# slot: at sqlite-vec's default of 1,024 vectors of 1,536 numbers (6 MB) that held the single
# writer 1.2 ms per vector, and every streaming reply's commits waited behind it; at 128 it is
# 0.1 ms, and a nearest-neighbour scan of 30,000 vectors takes as long as before.
VECTOR_CHUNK_SIZE = 128


class MemoryMismatch(RuntimeError):
    """The stored vectors were made by another model or at another size than configured."""


@dataclass(frozen=True)
class IndexState:
    """What the stored vectors are (model and size, None before any) and whether jobs embed."""

    model: str | None
    dimensions: int | None
    active: bool


def vector_blob(vector: Sequence[float]) -> bytes:
    """A vector as sqlite-vec stores float32 vectors (an array("f") as it is, on
    little-endian machines)."""
    if isinstance(vector, array) and vector.typecode == "f" and sys.byteorder == "little":
        return vector.tobytes()
    return struct.pack(f"<{len(vector)}f", *vector)


def read_index(db: ReadDB | WriteDB) -> IndexState:
    """The row of `memory_index`."""
    row = db.one("SELECT model, dimensions, active FROM memory_index WHERE id = 1")
    if row is None:
        return IndexState(None, None, False)
    return IndexState(row["model"], row["dimensions"], bool(row["active"]))


def vector_search_available(db: ReadDB | WriteDB) -> bool:
    """True when sqlite-vec is loaded on this connection."""
    try:
        db.scalar("SELECT vec_version()")
    except apsw.SQLError:
        return False
    return True


def has_vector_table(db: ReadDB | WriteDB) -> bool:
    """True once the `memory_vectors` table exists."""
    return bool(db.scalar("SELECT count(*) FROM sqlite_master WHERE name = ?", (VECTOR_TABLE,)))


def mismatch_message(stored: IndexState, model: str, dimensions: int | None, db: str) -> str:
    """The start-up error for an index made otherwise than configured."""
    now = f"--embedding-model {model!r}" + (
        f" at {dimensions} dimensions" if dimensions is not None else ""
    )
    return (
        f"The memory index holds vectors of {stored.model!r} at {stored.dimensions} dimensions,"
        f" but this server is configured with {now}: searching them together would silently"
        f" return wrong matches. Run `{REINDEX_COMMAND} --db {db}` with the new --embedding-*"
        " settings to re-embed everything, or start with the settings the index was made with."
    )


def check_index(stored: IndexState, model: str, dimensions: int | None, db: str) -> None:
    """Raise MemoryMismatch when the stored vectors are not of `model` at `dimensions`."""
    if stored.model is None:
        return
    if stored.model != model or (dimensions is not None and stored.dimensions != dimensions):
        raise MemoryMismatch(mismatch_message(stored, model, dimensions, db))


def set_index(db: WriteDB, model: str | None, dimensions: int | None, active: bool) -> None:
    """Record what the stored vectors are and whether this server embeds."""
    db.execute(
        "UPDATE memory_index SET model = ?, dimensions = ?, active = ?, updated_at = ?"
        " WHERE id = 1",
        (model, dimensions, int(active), time.time()),
    )


def set_active(db: WriteDB, active: bool) -> None:
    """Turn the embedding jobs' triggers on or off, keeping what the index holds."""
    db.execute(
        "UPDATE memory_index SET active = ?, updated_at = ? WHERE id = 1 AND active != ?",
        (int(active), time.time(), int(active)),
    )


def create_vector_table(db: WriteDB, dimensions: int) -> None:
    """Make `memory_vectors` for vectors of `dimensions` (if missing), and the trigger that
    forgets a chunk's vector with the chunk."""
    db.execute(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {VECTOR_TABLE} USING vec0("
        f"embedding float[{int(dimensions)}] distance_metric=cosine, owner text,"
        f" chunk_size={VECTOR_CHUNK_SIZE})"
    )
    db.execute(
        "CREATE TRIGGER IF NOT EXISTS memory_chunks_forget AFTER DELETE ON memory_chunks BEGIN"
        f" DELETE FROM {VECTOR_TABLE} WHERE rowid = OLD.id; END"
    )


def drop_vectors(db: WriteDB) -> None:
    """Forget every chunk and vector, and what the index held (before a reindex)."""
    db.execute("DROP TRIGGER IF EXISTS memory_chunks_forget")
    db.execute(f"DROP TABLE IF EXISTS {VECTOR_TABLE}")
    db.execute("DELETE FROM memory_chunks")
    db.execute(
        "UPDATE memory_index SET model = NULL, dimensions = NULL, updated_at = ? WHERE id = 1",
        (time.time(),),
    )


@dataclass(frozen=True)
class Source:
    """A text to embed: a message or a note, where it belongs, and its words."""

    kind: str  # "message" or "note"
    id: str
    thread_id: str | None
    owner: str
    text: str


def load_source(db: ReadDB | WriteDB, kind: str, source_id: str) -> Source | None:
    """The message or note `source_id`, or None when it is gone or has nothing to embed."""
    if kind == "message":
        row = db.one(
            "SELECT id, thread_id, text FROM messages WHERE id = ?"
            " AND status IN ('complete', 'interrupted') AND role IN ('user', 'assistant')"
            " AND text != ''",
            (source_id,),
        )
        if row is None:
            return None
        return Source("message", row["id"], row["thread_id"], row["thread_id"], row["text"])
    row = db.one("SELECT id, thread_id, user_id, text FROM memory_notes WHERE id = ?", (source_id,))
    if row is None or not row["text"]:
        return None
    owner = row["thread_id"] or f"user:{row['user_id'] or ''}"
    return Source("note", row["id"], row["thread_id"], owner, row["text"])


# Every message and note that has something to remember and no chunks yet, oldest first: what
# the triggers of voicestack.agent.memory_migrations would have queued while embeddings were off.
_PENDING = """
    SELECT kind, id, created_at FROM (
        SELECT 'message' AS kind, m.id AS id, m.created_at AS created_at FROM messages m
        WHERE m.status IN ('complete', 'interrupted') AND m.role IN ('user', 'assistant')
            AND trim(m.text, char(32, 9, 10, 13)) != ''
            AND NOT EXISTS (SELECT 1 FROM memory_chunks c WHERE c.message_id = m.id){messages}
        UNION ALL
        SELECT 'note', n.id, n.created_at FROM memory_notes n
        WHERE trim(n.text, char(32, 9, 10, 13)) != ''
            AND NOT EXISTS (SELECT 1 FROM memory_chunks c WHERE c.note_id = n.id){notes}
    )
    WHERE created_at > ? OR (created_at = ? AND id > ?)
    ORDER BY created_at, id
"""


def _not_queued(alias: str) -> str:
    return (
        f" AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.ref = {alias}.id"
        " AND j.name = 'memory.embed' AND j.status IN ('pending', 'running'))"
    )


def pending_sources(
    db: ReadDB | WriteDB,
    limit: int | None = None,
    skip_queued: bool = False,
    after: tuple[float, str] | None = None,
) -> list[tuple[str, str, float]]:
    """(kind, id, created_at) of the messages and notes not embedded yet, oldest first, after
    `after` (created_at, id) if given; with `skip_queued`, not those a `memory.embed` job is
    queued or running for."""
    sql = _PENDING.format(
        messages=_not_queued("m") if skip_queued else "",
        notes=_not_queued("n") if skip_queued else "",
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    at, source_id = after if after is not None else (float("-inf"), "")
    rows = db.all(sql, (at, at, source_id))
    return [(row["kind"], row["id"], float(row["created_at"])) for row in rows]


def has_chunks(db: ReadDB | WriteDB, kind: str, source_id: str) -> bool:
    """True when the message or note has chunks (and so vectors)."""
    column = "message_id" if kind == "message" else "note_id"
    return (
        db.one(f"SELECT 1 FROM memory_chunks WHERE {column} = ? LIMIT 1", (source_id,)) is not None
    )


def queue_backfill(db: WriteDB) -> bool:
    """Queue a `memory.backfill` run (voicestack.agent.memory_backfill) unless one is queued or
    running, or nothing needs it; True when one was queued."""
    open_run = db.one(
        "SELECT 1 FROM jobs WHERE name = ? AND kind = 'function'"
        " AND status IN ('pending', 'running') LIMIT 1",
        (BACKFILL_JOB,),
    )
    if open_run is not None or not pending_sources(db, limit=1):
        return False
    insert_job(db, BACKFILL_JOB, {}, time.time(), None)
    return True


def forget_source(db: WriteDB, kind: str, source_id: str) -> int:
    """Remove the chunks (and so the vectors) of a message or note; returns how many."""
    column = "message_id" if kind == "message" else "note_id"
    return db.execute(f"DELETE FROM memory_chunks WHERE {column} = ?", (source_id,)).changes


def store_chunks(
    db: WriteDB,
    source: Source,
    chunks: list[str],
    vectors: Sequence[Sequence[float]],
    model: str,
    dimensions: int,
) -> int:
    """Replace the source's chunks and vectors with these; returns how many were stored."""
    column = "message_id" if source.kind == "message" else "note_id"
    db.execute(f"DELETE FROM memory_chunks WHERE {column} = ?", (source.id,))
    stamp = time.time()
    for seq, (text, vector) in enumerate(zip(chunks, vectors, strict=True)):
        chunk_id = db.execute(
            f"INSERT INTO memory_chunks({column}, thread_id, owner, seq, text, model, dimensions,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (source.id, source.thread_id, source.owner, seq, text, model, dimensions, stamp),
        ).last_rowid
        db.execute(
            f"INSERT INTO {VECTOR_TABLE}(rowid, embedding, owner) VALUES (?, ?, ?)",
            (chunk_id, vector_blob(vector), source.owner),
        )
    return len(chunks)


def index_details(db: ReadDB | WriteDB, enabled: bool, model: str) -> dict[str, Any]:
    """What GET /healthz?details=1 says of memory."""
    state = read_index(db)
    chunks = db.scalar("SELECT count(*) FROM memory_chunks") or 0
    if not enabled:
        return {"mode": "fts", "embeddingModel": None, "dimensions": None, "chunks": chunks}
    return {
        "mode": "hybrid",
        "embeddingModel": model,
        "dimensions": state.dimensions,
        "chunks": chunks,
    }
