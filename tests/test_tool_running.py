"""Running a tool: its result as plain JSON, its exceptions and timeouts as error outcomes, and
the ToolCtx it runs with."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import Point, make_ctx
from voicestack.agent.tools import NoToolArgs, Tool, ToolCtx, ToolOutcome, run_tool
from voicestack.identity import Caller
from voicestack.store import Store

pytestmark = pytest.mark.anyio


def make_tool(run: Callable[[ToolCtx, Any], Any], name: str = "t") -> Tool:
    return Tool(name, "A test tool.", NoToolArgs, run)


async def test_a_result_comes_back_as_plain_json() -> None:
    async def run(ctx: ToolCtx, args: Any) -> Any:
        return {"tuple": (1, 2), "point": Point(x=1)}

    outcome = await run_tool(make_tool(run), make_ctx(), NoToolArgs(), None)
    assert outcome == ToolOutcome(True, {"tuple": [1, 2], "point": {"x": 1, "y": 0}}, None)


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (ValueError("no such city"), "ValueError: no such city"),
        (RuntimeError(), "RuntimeError"),
        (TimeoutError("upstream took too long"), "TimeoutError: upstream took too long"),
        (KeyError("k"), "KeyError: 'k'"),
    ],
)
async def test_a_tool_exception_becomes_an_error_outcome(exc: Exception, error: str) -> None:
    async def run(ctx: ToolCtx, args: Any) -> Any:
        raise exc

    assert await run_tool(make_tool(run), make_ctx(), NoToolArgs(), 5.0) == ToolOutcome(
        False, None, error
    )


async def test_a_slow_tool_is_cancelled_at_its_timeout() -> None:
    cancelled = asyncio.Event()

    async def run(ctx: ToolCtx, args: Any) -> Any:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    outcome = await run_tool(make_tool(run), make_ctx(), NoToolArgs(), 0.05)
    assert outcome == ToolOutcome(False, None, "timed out after 0.05 s")
    assert cancelled.is_set()


async def test_cancelling_the_caller_cancels_the_tool() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def run(ctx: ToolCtx, args: Any) -> Any:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.create_task(run_tool(make_tool(run), make_ctx(), NoToolArgs(), 5.0))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (object(), "The tool's result is not JSON: object is not JSON serializable"),
        (b"raw", "The tool's result is not JSON: bytes are not JSON: return text or base64"),
        (
            {"x": float("nan")},
            "The tool's result is not JSON: Out of range float values are not JSON compliant",
        ),
    ],
)
async def test_a_result_that_is_not_json_is_an_error(value: Any, error: str) -> None:
    async def run(ctx: ToolCtx, args: Any) -> Any:
        return value

    assert await run_tool(make_tool(run), make_ctx(), NoToolArgs(), None) == ToolOutcome(
        False, None, error
    )


# -- ToolCtx ------------------------------------------------------------------------------------


async def test_progress_is_checked_and_forwarded() -> None:
    seen: list[Any] = []

    async def report(value: Any) -> None:
        seen.append(value)

    ctx = make_ctx(report_progress=report)
    await ctx.progress(1)
    await ctx.progress(0.25)
    await ctx.progress("x" * 300)
    await ctx.progress({"page": 2, "of": 9})
    assert seen == [1.0, 0.25, "x" * 200, {"page": 2, "of": 9}]
    with pytest.raises(ValueError, match=r"progress 1\.5 is outside 0\.\.1\."):
        await ctx.progress(1.5)
    with pytest.raises(TypeError, match="progress must be"):
        await ctx.progress(True)
    with pytest.raises(ValueError, match="at most 2048 bytes"):
        await ctx.progress({"text": "y" * 3000})
    assert len(seen) == 4


async def test_ctx_reads_and_writes_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "ctx.db")
    store.start()
    try:
        ctx = make_ctx(store=store)
        await ctx.write(lambda db: db.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)"))
        rowid = await ctx.write(
            lambda db: db.execute("INSERT INTO kv VALUES ('a', 'b')").last_rowid
        )
        assert rowid == 1
        assert await ctx.read(lambda db: db.all("SELECT k, v FROM kv")) == [{"k": "a", "v": "b"}]
        assert (ctx.user, ctx.thread_id, ctx.call_id) == (
            Caller("ada", "Ada"),
            "thread-1",
            "call-1",
        )
    finally:
        store.close()
