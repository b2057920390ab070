"""Tools for the tool tests: `draw`, with nested pydantic arguments, and `ping-pong`, with none
and every option of the decorator; and the ToolCtx they run with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from voicestack.agent.tools import ToolCtx, tool
from voicestack.identity import Caller


class Point(BaseModel):
    """A point."""

    x: int
    y: int = 0


class DrawArgs(BaseModel):
    """What to draw."""

    label: str = Field(min_length=1)
    points: list[Point]


@tool
async def draw(ctx: ToolCtx, args: DrawArgs) -> dict[str, Any]:
    """Draw a labelled polyline.

    The second paragraph is for people reading the code, not for the model.
    """
    return {"label": args.label, "count": len(args.points)}


@tool("ping-pong", description="Answers pong.", needs_approval=True, timeout_s=2.5)
async def ping(ctx: ToolCtx) -> str:
    return "pong"


async def _never(*_args: Any) -> Any:
    raise AssertionError("not used by this test")


def make_ctx(
    store: Any = None,
    report_progress: Callable[[Any], Any] = _never,
) -> ToolCtx:
    """A ToolCtx for user Ada in thread-1, call-1, on `store`; running functions fails the test."""
    return ToolCtx(
        user=Caller("ada", "Ada"),
        thread_id="thread-1",
        call_id="call-1",
        store=store,
        run_query=_never,
        run_mutation=_never,
        report_progress=report_progress,
    )
