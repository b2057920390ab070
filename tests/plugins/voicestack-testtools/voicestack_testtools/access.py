"""A tool that reads a thread through the server's own query, for the tests of tool identity.

It is its own entry point, `testtools_access`, so servers that load only `testtools` offer
exactly the tools they always did.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from voicestack import ToolCtx, tool


class ReadThreadArgs(BaseModel):
    """The thread to read."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100, description="The thread id.")


@tool
async def read_thread(ctx: ToolCtx, args: ReadThreadArgs) -> dict[str, Any]:
    """Read a thread with `threads.get`, as the user whose message asked; say who read it."""
    thread = await ctx.run_query("threads.get", {"id": args.id})
    reader = ctx.user.name if ctx.user else None
    return {"id": thread["id"], "title": thread["title"], "reader": reader}
