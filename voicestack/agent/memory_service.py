"""Semantic memory of a running server: embedding jobs, notes, and the index's start-up check.

A message that ends (complete, or interrupted with the text that was heard or streamed), a
later change of its text, or a note queues a `memory.embed` job in its own transaction (the
triggers of voicestack.agent.memory_migrations), so a reply never waits for an embedding. The
job reads the text as it is then, splits it into chunks, asks the provider for their vectors
and replaces the source's chunks with them; a provider error, or vectors of the wrong size,
fails the attempt with its reason, and the scheduler retries it with backoff until its last
attempt (`scheduler.jobs` shows both). What was said while embeddings were off is embedded by
the backfill queued at start (voicestack.agent.memory_backfill).

Without an embedding model, a provider or sqlite-vec, memory is full-text only, and says so in
the start-up log and in `GET /healthz?details=1`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from voicestack.agent.embedding import Embedder, EmbeddingSettings, Vector
from voicestack.agent.llm import ProviderError
from voicestack.agent.memory_chunks import split_text
from voicestack.agent.memory_index import (
    IndexState,
    Source,
    check_index,
    create_vector_table,
    forget_source,
    has_chunks,
    index_details,
    load_source,
    pending_sources,
    queue_backfill,
    read_index,
    set_active,
    set_index,
    store_chunks,
    vector_search_available,
)
from voicestack.config import Settings
from voicestack.functions.context import ActionCtx
from voicestack.functions.errors import FunctionError
from voicestack.functions.registry import action
from voicestack.identity import Caller
from voicestack.ids import new_id
from voicestack.store.connection import vector_search_unavailable
from voicestack.store.db import ReadDB, WriteDB
from voicestack.store.readers import Snapshot
from voicestack.store.store import Store

log = logging.getLogger(__name__)

MAX_NOTE_CHARS = 100_000


@dataclass(frozen=True)
class MemoryMode:
    """How memory searches: `hybrid` with embeddings, else `fts` and why."""

    mode: Literal["hybrid", "fts"]
    reason: str = ""


class Memory:
    """The server's embedder and vector index; `prepare` once at start-up."""

    def __init__(self, store: Store | None, embedder: Embedder | None, db_label: str = "") -> None:
        """Nothing is read or called until `prepare`."""
        self._store = store
        self.embedder = embedder
        self._db_label = db_label
        self.mode = MemoryMode("fts", "not prepared")

    @property
    def enabled(self) -> bool:
        """True when messages are embedded and searches may use vectors."""
        return self.mode.mode == "hybrid"

    def prepare(self, db: WriteDB) -> MemoryMode:
        """Decide the mode; with embeddings, check the index against the configuration (raises
        MemoryMismatch) and make its vector table when the size is known."""
        embedder = self.embedder
        if embedder is None or not embedder.model:
            self.mode = MemoryMode("fts", "--embedding-model is empty")
        elif not embedder.enabled:
            self.mode = MemoryMode("fts", "no embedding provider is configured")
        elif not vector_search_available(db):
            self.mode = MemoryMode("fts", vector_search_unavailable() or "sqlite-vec is not loaded")
        else:
            stored = read_index(db)
            expected = embedder.settings.expected_dimensions
            check_index(stored, embedder.model, expected, self._db_label)
            dimensions = expected or stored.dimensions
            if dimensions is not None:
                create_vector_table(db, dimensions)
            set_index(db, embedder.model, dimensions, True)
            queue_backfill(db)
            self.mode = MemoryMode("hybrid")
            return self.mode
        set_active(db, False)
        return self.mode

    def describe(self) -> str:
        """One line for the start-up log."""
        if self.enabled and self.embedder is not None:
            return f"memory: hybrid search, embeddings from {self.embedder.model!r}"
        return f"memory: full-text only ({self.mode.reason})"

    def details(self, db: ReadDB) -> dict[str, Any]:
        """Memory's part of GET /healthz?details=1."""
        model = self.embedder.model if self.embedder is not None else ""
        details = index_details(db, self.enabled, model)
        if not self.enabled:
            details["reason"] = self.mode.reason
        return details

    async def embed_sources(self, keys: list[tuple[str, str]]) -> int:
        """Embed these messages and notes, (kind, id) each, now: their chunks' vectors in as few
        provider requests as the batcher allows, stored in one write. One with no text left
        loses its chunks; one whose text changed meanwhile is left to the job that change
        queued. Returns how many chunks were stored. Raises FunctionError with the provider's
        or the size check's reason."""
        if self._store is None or self.embedder is None or not keys:
            return 0
        embedder = self.embedder

        def look(snap: Snapshot) -> tuple[list[Source | None], list[tuple[str, str]], int | None]:
            db = snap.db()
            sources = [load_source(db, kind, source_id) for kind, source_id in keys]
            gone = [
                key
                for key, source in zip(keys, sources, strict=True)
                if source is None and has_chunks(db, *key)
            ]
            return sources, gone, read_index(db).dimensions

        loaded, gone, known = await self._store.read(look)
        sources = [source for source in loaded if source is not None]
        if not sources and not gone:
            return 0
        pieces = [split_text(source.text) for source in sources]
        texts = [chunk for chunks in pieces for chunk in chunks]
        vectors: list[Vector] = []
        if texts:
            try:
                vectors = await embedder.embed(
                    texts, known or embedder.settings.expected_dimensions
                )
            except ProviderError as exc:
                raise FunctionError(exc.code, exc.message, 502) from None

        def save(db: WriteDB) -> int:
            for kind, source_id in gone:
                forget_source(db, kind, source_id)
            if not texts:
                return 0
            dimensions = self._index_size(db, vectors)
            stored = at = 0
            for source, chunks in zip(sources, pieces, strict=True):
                part = vectors[at : at + len(chunks)]
                at += len(chunks)
                if load_source(db, source.kind, source.id) == source:
                    stored += store_chunks(db, source, chunks, part, embedder.model, dimensions)
            return stored

        return (await self._store.write(save)).value

    async def pending(
        self, limit: int, after: tuple[float, str] | None = None
    ) -> list[tuple[str, str, float]]:
        """(kind, id, created_at) of up to `limit` messages and notes with no vectors and no
        embedding job queued, oldest first, after `after` (created_at, id) if given."""
        if self._store is None:
            return []
        return await self._store.read(
            lambda snap: pending_sources(snap.db(), limit, skip_queued=True, after=after)
        )

    def _index_size(self, db: WriteDB, vectors: list[Vector]) -> int:
        """The index's vector size, checked against `vectors` and the configured model (fixed by
        them when the model's size was unknown)."""
        assert self.embedder is not None
        embedder = self.embedder
        state: IndexState = read_index(db)
        if state.model not in (None, embedder.model):
            raise FunctionError(
                "embedding_model_changed",
                f"The memory index now holds {state.model!r}, not {embedder.model!r}:"
                " restart the server with the settings it was reindexed with.",
                409,
            )
        dimensions = state.dimensions
        if dimensions is None:
            # A model of unknown size: its first answer fixes the index's size.
            dimensions = len(vectors[0])
            create_vector_table(db, dimensions)
            set_index(db, embedder.model, dimensions, True)
        try:
            embedder.check_size(vectors, dimensions)
        except ProviderError as exc:
            raise FunctionError(exc.code, exc.message, 502) from None
        return dimensions


_installed = Memory(None, None)


def install_memory(memory: Memory) -> None:
    """Make `memory` the one this process's memory functions use."""
    global _installed
    _installed = memory


def open_memory(store: Store, settings: Settings) -> Memory:
    """This server's semantic memory, checked against the stored index and installed; a
    mismatch raises (the store is closed first), stopping the start."""
    memory = Memory(store, Embedder(EmbeddingSettings.from_settings(settings)), str(settings.db))
    try:
        store.write_sync(memory.prepare)
    except BaseException:
        store.close()
        raise
    install_memory(memory)
    log.info("%s", memory.describe())
    return memory


def installed_memory() -> Memory:
    """The memory of this process's server (full-text only before the Runtime installs one)."""
    return _installed


class EmbedArgs(BaseModel):
    """Which message or note to embed."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["message", "note"]
    id: str = Field(min_length=1, max_length=100)


@action("memory.embed")
async def embed(ctx: ActionCtx, args: EmbedArgs) -> dict[str, Any]:
    """Embed a message or note into semantic memory (run by the scheduler only)."""
    if ctx.job is None:
        raise FunctionError(
            "job_only",
            "memory.embed runs only as a scheduled job: messages and notes are embedded on"
            " their own once saved.",
            403,
        )
    memory = installed_memory()
    if not memory.enabled:
        return {"chunks": 0}
    return {"chunks": await memory.embed_sources([(args.source, args.id)])}


def remember(
    db: WriteDB, text: str, *, thread_id: str | None = None, user: Caller | None = None
) -> str:
    """Save a note to semantic memory, in the caller's transaction; returns its id.

    A note of a thread is found by whoever may read the thread; a note without one by `user`
    alone (and admins). With embeddings on, it is embedded by a job after the commit.
    """
    if not isinstance(text, str) or not text.strip():
        raise FunctionError("invalid_note", "A note needs some text.", 422)
    if len(text) > MAX_NOTE_CHARS:
        raise ValueError(f"A note is at most {MAX_NOTE_CHARS} characters.")
    if thread_id is None and user is None:
        raise ValueError("A note belongs to a thread or to a user: give thread_id or user.")
    note_id = new_id("note")
    db.execute(
        "INSERT INTO memory_notes(id, thread_id, user_id, text, created_at) VALUES (?, ?, ?, ?, ?)",
        (note_id, thread_id, user.id if user is not None else None, text, time.time()),
    )
    return note_id


MEMORY_JOB_FUNCTIONS = (embed,)
