"""The app of bench/memory.py's delta-latency runs: a cron that writes notes every second.

Each run writes the same notes whether the server embeds or not, so the two runs differ only in
the embedding jobs that run in the background while replies stream.
"""

from __future__ import annotations

import os
import secrets

from pydantic import BaseModel, ConfigDict, Field

from voicestack import Caller, Cron, MutationCtx, mutation, remember

NOTES_PER_SECOND = int(os.environ.get("BENCH_MEMORY_NOTES_PER_S", "20"))
_WRITER = Caller("bench-notes", "bench-notes")
_WORDS = [
    "harbour",
    "lantern",
    "copper",
    "meadow",
    "orbit",
    "velvet",
    "quarry",
    "saffron",
    "tundra",
    "willow",
]


class NotesArgs(BaseModel):
    """How many notes to write (default NOTES_PER_SECOND)."""

    model_config = ConfigDict(extra="forbid")

    count: int | None = Field(None, ge=1, le=100_000)


@mutation("bench.notes")
def notes(ctx: MutationCtx, args: NotesArgs) -> list[str]:
    """Write `count` distinct notes of about 80 words; returns their ids."""
    ids = []
    for n in range(args.count or NOTES_PER_SECOND):
        seed = secrets.randbelow(1_000_000)
        text = " ".join(
            _WORDS[(seed + n * 7 + i) % len(_WORDS)] + str(seed % 97 + i) for i in range(80)
        )
        ids.append(remember(ctx.db, text, user=_WRITER))
    return ids


CRONS = [Cron("* * * * * *", "bench.notes", {})] if NOTES_PER_SECOND > 0 else []
