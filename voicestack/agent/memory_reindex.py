"""`voicestack memory reindex`: re-embed every message and note with the configured model.

It works on the database file (host-side, like `voicestack db`). When the index holds another
model or size it is emptied first; then every message and note without chunks is embedded, a
batch per transaction. A stopped reindex therefore resumes where it stopped: what was committed
has its chunks and is not embedded again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import apsw

from voicestack.agent.embedding import Embedder, EmbeddingSizeError
from voicestack.agent.llm import ProviderError
from voicestack.agent.memory_chunks import split_text
from voicestack.agent.memory_index import (
    Source,
    create_vector_table,
    drop_vectors,
    load_source,
    pending_sources,
    read_index,
    set_index,
    store_chunks,
    vector_search_available,
)
from voicestack.store.connection import open_connection, vector_search_unavailable
from voicestack.store.db import WriteDB
from voicestack.store.migrations import Migration, migrate_core

# Sources per transaction: small enough that a stop loses little, big enough to batch requests.
BATCH_SOURCES = 16

_EMBEDDED = (
    "SELECT (SELECT count(DISTINCT message_id) FROM memory_chunks)"
    " + (SELECT count(DISTINCT note_id) FROM memory_chunks)"
)

Progress = Callable[[int, int], None]  # (sources done, total)


class ReindexError(RuntimeError):
    """A reindex that cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class ReindexReport:
    """What a reindex did."""

    model: str
    dimensions: int | None
    cleared: bool  # the index held another model or size and was emptied
    already: int  # sources embedded by an earlier (stopped) run or by the server
    embedded: int
    chunks: int
    remaining: int  # left for the next run (a --limit was reached)


async def reindex(
    path: Path,
    embedder: Embedder,
    migrations: tuple[Migration, ...],
    progress: Progress | None = None,
    limit: int | None = None,
) -> ReindexReport:
    """Re-embed what needs it in the database at `path`, at most `limit` sources this run."""
    if not embedder.enabled:
        raise ReindexError(
            "No embedding model or provider is configured: give --embedding-model and"
            " --embedding-base-url (or --openai-base-url / OPENAI_API_KEY)."
        )
    conn = open_connection(path)
    try:
        migrate_core(conn, migrations)
        db = WriteDB(conn)
        if not vector_search_available(db):
            reason = vector_search_unavailable() or "sqlite-vec is not loaded"
            raise ReindexError(f"{reason}: reindexing needs sqlite-vec (pip install sqlite-vec).")
        cleared, dimensions = _prepare(conn, db, embedder)
        already = int(db.scalar(_EMBEDDED) or 0)
        pending = pending_sources(db)
        todo = pending if limit is None else pending[:limit]
        total = already + len(pending)
        done = chunks = 0
        if progress is not None:
            progress(already, total)
        for start in range(0, len(todo), BATCH_SOURCES):
            batch = [load_source(db, kind, i) for kind, i, _ in todo[start : start + BATCH_SOURCES]]
            sources = [source for source in batch if source is not None]
            chunks += await _embed_batch(conn, db, embedder, sources, dimensions)
            dimensions = read_index(db).dimensions
            done += len(batch)
            if progress is not None:
                progress(already + done, total)
        return ReindexReport(
            embedder.model, dimensions, cleared, already, done, chunks, len(pending) - done
        )
    finally:
        conn.close()


def _prepare(conn: apsw.Connection, db: WriteDB, embedder: Embedder) -> tuple[bool, int | None]:
    stored = read_index(db)
    expected = embedder.settings.expected_dimensions
    differs = stored.model is not None and (
        stored.model != embedder.model or (expected is not None and stored.dimensions != expected)
    )
    with conn:
        if differs:
            drop_vectors(db)
        dimensions = expected if expected is not None else (None if differs else stored.dimensions)
        if dimensions is not None:
            create_vector_table(db, dimensions)
        set_index(db, embedder.model, dimensions, stored.active)
    return differs, dimensions


async def _embed_batch(
    conn: apsw.Connection,
    db: WriteDB,
    embedder: Embedder,
    sources: list[Source],
    dimensions: int | None,
) -> int:
    pieces = [split_text(source.text) for source in sources]
    texts = [chunk for chunks in pieces for chunk in chunks]
    if not texts:
        return 0
    try:
        vectors = await embedder.embed(texts, dimensions)
    except EmbeddingSizeError as exc:
        raise ReindexError(exc.message) from None
    except ProviderError as exc:
        raise ReindexError(f"{exc.message} Run the reindex again to resume.") from None
    size = dimensions if dimensions is not None else len(vectors[0])
    try:
        embedder.check_size(vectors, size)
    except ProviderError as exc:
        raise ReindexError(exc.message) from None
    stored = 0
    with conn:
        if dimensions is None:
            create_vector_table(db, size)
            set_index(db, embedder.model, size, read_index(db).active)
        at = 0
        for source, chunks in zip(sources, pieces, strict=True):
            part = vectors[at : at + len(chunks)]
            at += len(chunks)
            stored += store_chunks(db, source, chunks, part, embedder.model, size)
    return stored


def run_reindex(
    path: Path,
    embedder: Embedder,
    migrations: tuple[Migration, ...],
    progress: Progress | None = None,
    limit: int | None = None,
) -> ReindexReport:
    """`reindex` on an event loop of its own (for the CLI)."""

    async def run() -> ReindexReport:
        try:
            return await reindex(path, embedder, migrations, progress, limit)
        finally:
            await embedder.aclose()

    return asyncio.run(run())
