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

from typing import Any

from pydantic import BaseModel, ConfigDict

from voicestack.agent.memory_index import BACKFILL_JOB
from voicestack.agent.memory_service import installed_memory
from voicestack.functions.context import ActionCtx
from voicestack.functions.errors import FunctionError
from voicestack.functions.registry import action

# Sources per run: one provider request (the batcher's limit is 64 texts) and one short write.
BATCH = 32
# Between runs: the embedding jobs of new messages and every reply's commits go first.
PAUSE_S = 0.2


class BackfillArgs(BaseModel):
    """A backfill run takes no arguments."""

    model_config = ConfigDict(extra="forbid")


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
    keys = await memory.pending(BATCH + 1)
    chunks = await memory.embed_sources(keys[:BATCH])
    more = len(keys) > BATCH
    if more:
        await ctx.scheduler.run_after(PAUSE_S, BACKFILL_JOB, {})
    return {"embedded": len(keys[:BATCH]), "chunks": chunks, "more": more}


MEMORY_BACKFILL_FUNCTIONS = (backfill,)
