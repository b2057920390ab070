"""The backlog of semantic memory: what was said while the server had no embedding model.

The triggers queue a `memory.embed` job only while embeddings are on, so the messages and
notes of a full-text-only period have no vectors. When a server starts with embeddings it
queues one `memory.backfill` job (voicestack.agent.memory_index's `queue_backfill`) if any such
source exists. Each run embeds the oldest BATCH of them, as one provider request and one write,
and queues the next run PAUSE_S later until none is left, so the backlog never holds the writer
or the event loop for long, and a reply never waits for it. What is done is what has chunks, so
a stop loses nothing: the next start queues the backfill again and it goes on where it was.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict

from voicestack.agent.memory_index import BACKFILL_JOB
from voicestack.agent.memory_service import Memory, installed_memory
from voicestack.functions.context import ActionCtx
from voicestack.functions.errors import FunctionError
from voicestack.functions.registry import action

log = logging.getLogger(__name__)

# Sources per run: one provider request (the batcher's limit is 64 texts) and one short write.
BATCH = 32
# Between runs: the embedding jobs of new messages and every reply's commits go first.
PAUSE_S = 0.2


class BackfillArgs(BaseModel):
    """Where a backfill run goes on: after the source (created_at, id) the last run reached.
    The cursor, not "has no chunks yet", decides what is next, so a source that yields no
    chunks or keeps failing is passed over instead of being taken again and again."""

    model_config = ConfigDict(extra="forbid")

    after_at: float | None = None
    after_id: str | None = None


@action(BACKFILL_JOB)
async def backfill(ctx: ActionCtx, args: BackfillArgs) -> dict[str, Any]:
    """Embed the oldest messages and notes that have no vectors yet, and queue the next run
    while some are left (run by the scheduler only)."""
    if ctx.job is None:
        raise FunctionError(
            "job_only",
            f"{BACKFILL_JOB} runs only as a scheduled job: a server with embeddings queues it"
            " when it starts.",
            403,
        )
    memory = installed_memory()
    if not memory.enabled:
        return {"embedded": 0, "chunks": 0, "more": False}
    after = None
    if args.after_at is not None and args.after_id is not None:
        after = (args.after_at, args.after_id)
    pending = await memory.pending(BATCH + 1, after)
    batch = pending[:BATCH]
    chunks, skipped = await _embed(memory, [(kind, source_id) for kind, source_id, _ in batch])
    more = len(pending) > BATCH
    if more:
        _, last_id, last_at = batch[-1]
        cursor = {"after_at": last_at, "after_id": last_id}
        await ctx.scheduler.run_after(PAUSE_S, BACKFILL_JOB, cursor)
    return {"embedded": len(batch) - skipped, "chunks": chunks, "skipped": skipped, "more": more}


async def _embed(memory: Memory, keys: list[tuple[str, str]]) -> tuple[int, int]:
    """Embed `keys` as one batch; if that fails, one at a time, passing over those that fail
    (logged) as long as some succeed. (chunks stored, sources passed over); raises the
    provider's error when every one fails: the provider is down, the job is retried."""
    try:
        return await memory.embed_sources(keys), 0
    except FunctionError as batch_error:
        chunks = skipped = 0
        for key in keys:
            try:
                chunks += await memory.embed_sources([key])
            except FunctionError as exc:
                log.warning("memory backfill passed over %s %s: %s", key[0], key[1], exc)
                skipped += 1
        if skipped == len(keys):
            raise batch_error from None
        return chunks, skipped


MEMORY_BACKFILL_FUNCTIONS = (backfill,)
