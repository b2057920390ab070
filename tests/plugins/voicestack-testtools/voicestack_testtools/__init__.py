"""Tools for voicestack's end-to-end tests; a server offers them only when a test names them.

Tests start servers with `VOICESTACK_LOAD_TOOLS=testtools`, so these tools never reach a server
that did not ask for them.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from voicestack import ToolCtx, tool


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlowCountArgs(_Args):
    """How far to count and how long each step takes."""

    n: int = Field(ge=1, le=1000, description="How far to count.")
    delay_s: float = Field(ge=0, le=10, description="Seconds each step takes.")


class EchoArgs(_Args):
    """The text to echo."""

    text: str = Field(description="The text to send back.")


class SleepArgs(_Args):
    """How long to sleep."""

    seconds: float = Field(ge=0, le=600, description="Seconds to sleep.")


@tool
async def slow_count(ctx: ToolCtx, args: SlowCountArgs) -> dict[str, int]:
    """Count from 1 to n, one step every delay_s seconds, reporting progress after each step."""
    for i in range(1, args.n + 1):
        await asyncio.sleep(args.delay_s)
        await ctx.progress(i / args.n)
    return {"counted": args.n}


@tool(needs_approval=True)
async def guarded_echo(ctx: ToolCtx, args: EchoArgs) -> dict[str, str]:
    """Send the text back, once a person has approved the call."""
    return {"echo": args.text}


@tool
async def explode(ctx: ToolCtx) -> None:
    """Always fail."""
    raise RuntimeError("the explode tool always fails")


@tool
async def sleepy(ctx: ToolCtx, args: SleepArgs) -> dict[str, float]:
    """Sleep for the given number of seconds, then say how long it slept."""
    await asyncio.sleep(args.seconds)
    return {"slept": args.seconds}
