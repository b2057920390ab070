"""`memory.search`: what was said, found by its words, its meaning, or both.

Words: an FTS5 index over `messages.text` (and notes) with external content, kept in step by
triggers; a streaming reply's text is written once, when it ends, so the index is not rewritten
for every streamed word. Meaning: the vectors of voicestack.agent.memory_service's embedding
jobs. `mode` is `hybrid` (both, fused by reciprocal rank; the default when embeddings are on),
`vector` or `text` (the default when memory is full-text only). Every hit has a `score` (see
voicestack.agent.memory_retrieval), and `minScore` drops the weaker ones.

The query's own words are embedded once per process and text (a cache), so a watched search
re-runs on every relevant commit without calling the provider again; a new matching message,
or its vector arriving, updates the watcher's results.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from voicestack.agent.embedding import Vector
from voicestack.agent.llm import ProviderError
from voicestack.agent.membership import require_thread
from voicestack.agent.memory_backfill import MEMORY_BACKFILL_FUNCTIONS
from voicestack.agent.memory_index import read_index
from voicestack.agent.memory_retrieval import (
    Candidate,
    Scope,
    fuse,
    hydrate,
    text_candidates,
    vector_candidates,
)
from voicestack.agent.memory_service import MEMORY_JOB_FUNCTIONS, Memory, installed_memory
from voicestack.functions.context import QueryCtx
from voicestack.functions.errors import FunctionError
from voicestack.functions.registry import query
from voicestack.identity import Caller
from voicestack.store.db import ReadDB
from voicestack.store.search import match_expression

SearchMode = Literal["hybrid", "vector", "text"]
# How many candidates each list brings to fusion, at least.
MIN_CANDIDATES = 40


class SearchArgs(BaseModel):
    """Words to look for, in one thread or in all the caller's threads."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    query: str = Field(min_length=1, max_length=1000, description="Words to look for.")
    thread_id: str | None = Field(
        None, alias="threadId", min_length=1, max_length=100, description="Only this thread."
    )
    limit: int = Field(20, ge=1, le=100)
    mode: SearchMode | None = Field(
        None,
        description="hybrid (words and meaning, fused), vector (meaning) or text (words);"
        " default: hybrid with embeddings, else text.",
    )
    min_score: float | None = Field(
        None,
        alias="minScore",
        ge=-1,
        le=1_000_000,
        allow_inf_nan=False,
        description="Leave out hits scoring below this.",
    )


def search_scope(db: ReadDB, user: Caller | None, thread_id: str | None) -> Scope:
    """What `user` may search: one thread they may read, or all their threads and notes (an
    admin's or a server without users: everything)."""
    if thread_id is not None:
        require_thread(db, thread_id, user)
        return Scope(thread_id=thread_id)
    if user is not None and not user.is_admin:
        return Scope(user_id=user.id)
    return Scope()


def query_vector(db: ReadDB, memory: Memory, text: str) -> Vector:
    """The query's vector, of the index's size; a provider failure or a vector of another size
    is the query's error (502), never a silent fall-back to words alone."""
    assert memory.embedder is not None
    dimensions = read_index(db).dimensions
    try:
        return memory.embedder.embed_query(text, dimensions=dimensions)
    except ProviderError as exc:
        raise FunctionError(exc.code, exc.message, 502) from None


def ranked(
    db: ReadDB, text: str, mode: SearchMode, scope: Scope, limit: int, memory: Memory
) -> list[tuple[Candidate, float]]:
    """The candidates of `mode`, best first, each with its score."""
    wanted = max(limit * 4, MIN_CANDIDATES)
    words: list[Candidate] = []
    if mode != "vector":
        match = match_expression(text)
        words = text_candidates(db, match, scope, wanted) if match is not None else []
        if mode == "text":
            return [(c, c.text_score or 0.0) for c in words]
    meaning = vector_candidates(db, query_vector(db, memory, text), scope, wanted)
    if mode == "vector":
        return [(c, c.similarity or 0.0) for c in meaning]
    return fuse(words, meaning)


@query("memory.search")
def search(ctx: QueryCtx, args: SearchArgs) -> list[dict[str, Any]]:
    """Messages (and notes) matching `query`, best first, each a message row with `source`, a
    `snippet` marking matched words with [ and ], and a `score`; only what the caller may read."""
    memory = installed_memory()
    mode: SearchMode = args.mode or ("hybrid" if memory.enabled else "text")
    if mode != "text" and not memory.enabled:
        raise FunctionError(
            "memory_text_only",
            f"Memory is full-text only on this server ({memory.mode.reason}): search with"
            ' mode "text", or start it with an --embedding-model.',
            422,
        )
    scope = search_scope(ctx.db, ctx.user, args.thread_id)
    scored = ranked(ctx.db, args.query, mode, scope, args.limit, memory)
    if args.min_score is not None:
        scored = [(c, score) for c, score in scored if score >= args.min_score]
    return hydrate(ctx.db, scored[: args.limit])


MEMORY_FUNCTIONS = (search, *MEMORY_JOB_FUNCTIONS, *MEMORY_BACKFILL_FUNCTIONS)
