"""Tools: the Tool object and decorator, argument checks for the model, runs, plugin loading."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from voicestack.agent.tool_loading import (
    LOAD_TOOLS_ENV,
    PluginFailure,
    ToolSet,
    load_tools,
)
from voicestack.agent.tools import (
    NoToolArgs,
    Tool,
    ToolArgsError,
    ToolCtx,
    ToolOutcome,
    parse_tool_args,
    run_tool,
    tool,
)
from voicestack.functions.context import Caller
from voicestack.store import Store

pytestmark = pytest.mark.anyio

CLOCK_TOOLS = [
    ("current_time", "voicestack-clock"),
    ("date_add", "voicestack-clock"),
    ("time_between", "voicestack-clock"),
]
NOTES_TOOLS = [("save_note", "voicestack-notes"), ("search_notes", "voicestack-notes")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
    return ToolCtx(
        user=Caller("ada", "Ada"),
        thread_id="thread-1",
        call_id="call-1",
        store=store,
        run_query=_never,
        run_mutation=_never,
        report_progress=report_progress,
    )


# -- the Tool object and the decorator -------------------------------------------------------


def test_the_decorator_takes_name_description_and_args_from_the_function() -> None:
    assert (draw.name, draw.description, draw.args_model, draw.plugin) == (
        "draw",
        "Draw a labelled polyline.",
        DrawArgs,
        "",
    )
    assert (draw.needs_approval, draw.timeout_s) == (False, None)
    assert (ping.name, ping.description, ping.args_model) == (
        "ping-pong",
        "Answers pong.",
        NoToolArgs,
    )
    assert (ping.needs_approval, ping.timeout_s) == (True, 2.5)


def test_a_multi_line_first_paragraph_becomes_one_line() -> None:
    @tool()
    async def wrapped(ctx: ToolCtx) -> None:
        """Say something
        over two lines.

        Details."""

    assert wrapped.description == "Say something over two lines."


async def test_a_tool_without_args_runs_with_the_empty_model() -> None:
    outcome = await run_tool(ping, make_ctx(), parse_tool_args(ping, ""), 1.0)
    assert outcome == ToolOutcome(True, "pong", None)


def test_openai_spec_and_describe() -> None:
    schema = DrawArgs.model_json_schema()
    assert draw.schema() == schema
    assert draw.openai_spec() == {
        "type": "function",
        "function": {
            "name": "draw",
            "description": "Draw a labelled polyline.",
            "parameters": schema,
        },
    }
    assert draw.describe() == {
        "name": "draw",
        "description": "Draw a labelled polyline.",
        "schema": schema,
        "plugin": "",
        "status": "loaded",
        "error": None,
    }
    assert ping.schema() == {
        "additionalProperties": False,
        "description": "The arguments of a tool that takes none.",
        "properties": {},
        "title": "NoToolArgs",
        "type": "object",
    }


@pytest.mark.parametrize("name", ["", "has space", "dotted.name", "x" * 65, "new\nline", "é"])
def test_tool_names_follow_openai_rules(name: str) -> None:
    with pytest.raises(ValueError, match="must be 1 to 64 letters, digits, '_' or '-'"):
        Tool(name, "", NoToolArgs, ping.run)


def test_a_64_character_name_is_allowed() -> None:
    assert Tool("a-" + "x" * 62, "", NoToolArgs, ping.run).name == "a-" + "x" * 62


def test_the_decorator_refuses_what_cannot_be_a_tool() -> None:
    def plain(ctx: ToolCtx) -> None:
        return None

    async def untyped(ctx: ToolCtx, args: dict) -> None:
        return None

    async def three(ctx: ToolCtx, args: DrawArgs, extra: int) -> None:
        return None

    with pytest.raises(TypeError, match="must be an async function"):
        tool(plain)
    with pytest.raises(TypeError, match="annotate its second parameter with a pydantic model"):
        tool(untyped)
    with pytest.raises(TypeError, match=r"must take \(ctx\) or \(ctx, args\)"):
        tool(three)
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        Tool("t", "", NoToolArgs, ping.run, timeout_s=0)


# -- argument checks, written for the model ----------------------------------------------------


def args_error(target: Tool, arguments: str) -> str:
    with pytest.raises(ToolArgsError) as caught:
        parse_tool_args(target, arguments)
    assert str(caught.value) == caught.value.message
    return caught.value.message


EXPECTED_DRAW = "Expected arguments: label (string, required), points (array of object, required)."


def test_valid_arguments_become_the_model() -> None:
    args = parse_tool_args(draw, '{"label": "L", "points": [{"x": 1}, {"x": 2, "y": 3}]}')
    assert args == DrawArgs(label="L", points=[Point(x=1), Point(x=2, y=3)])


def test_invalid_json_is_explained() -> None:
    assert args_error(draw, '{"label": "L",') == (
        "The arguments for tool 'draw' are not valid JSON (Expecting property name enclosed in "
        f"double quotes at line 1 column 15). Send one JSON object. {EXPECTED_DRAW}"
    )


@pytest.mark.parametrize(
    ("arguments", "kind"),
    [("[1, 2]", "an array"), ('"hi"', "a string"), ("3.5", "a number"), ("null", "null")],
)
def test_json_that_is_not_an_object_is_explained(arguments: str, kind: str) -> None:
    assert args_error(draw, arguments) == (
        f"The arguments for tool 'draw' must be a JSON object, not {kind}. {EXPECTED_DRAW}"
    )


def test_validation_errors_are_listed_field_by_field() -> None:
    arguments = json.dumps({"label": "", "points": [{"x": 1}, {"x": "far", "y": None}]})
    assert args_error(draw, arguments) == (
        "Invalid arguments for tool 'draw':\n"
        '- label: String should have at least 1 character (got "")\n'
        "- points[1].x: Input should be a valid integer, unable to parse string as an integer "
        '(got "far")\n'
        "- points[1].y: Input should be a valid integer (got null)\n"
        f"{EXPECTED_DRAW}"
    )
    assert args_error(draw, "{}") == (
        "Invalid arguments for tool 'draw':\n"
        "- label: Field required\n"
        "- points: Field required\n"
        f"{EXPECTED_DRAW}"
    )


def test_unexpected_arguments_to_a_tool_without_args() -> None:
    assert args_error(ping, '{"loud": true}') == (
        "Invalid arguments for tool 'ping-pong':\n"
        "- loud: Extra inputs are not permitted\n"
        "Expected arguments: no arguments: send {}."
    )


def test_long_bad_values_are_shortened() -> None:
    message = args_error(draw, json.dumps({"label": "L", "points": "x" * 500}))
    assert message.splitlines()[1] == (
        '- points: Input should be a valid list (got "' + "x" * 78 + "…)"
    )


# -- running ------------------------------------------------------------------------------------


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


# -- loading plugins ------------------------------------------------------------------------------


FakeDist = Callable[[str, dict[str, str], dict[str, str]], None]


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDist]:
    """Install a distribution by writing its dist-info and modules into a directory on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    modules: list[str] = []

    def install(name: str, entry_points: dict[str, str], sources: dict[str, str]) -> None:
        info = site / f"{name.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[voicestack.tools]\n{lines}")
        for module, source in sources.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            modules.append(module)

    monkeypatch.syspath_prepend(str(site))
    yield install
    for module in modules:
        sys.modules.pop(module, None)


def names(tool_set: ToolSet) -> list[tuple[str, str]]:
    return [(t.name, t.plugin) for t in tool_set.tools]


def test_installed_plugins_load_from_their_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOAD_TOOLS_ENV, "clock,notes")
    tool_set = load_tools()
    assert names(tool_set) == CLOCK_TOOLS + NOTES_TOOLS
    assert tool_set.failures == []
    assert tool_set.get("date_add") is tool_set.tools[1]
    assert tool_set.get("nope") is None
    assert [spec["function"]["name"] for spec in tool_set.openai_specs()] == [
        name for name, _ in CLOCK_TOOLS + NOTES_TOOLS
    ]
    assert [(p.plugin, p.entry_point) for p in tool_set.modules] == [
        ("voicestack-clock", "clock"),
        ("voicestack-notes", "notes"),
    ]
    apps = tool_set.apps()
    assert [(a.name, [f.name for f in a.functions]) for a in apps] == [
        ("voicestack-clock", []),
        ("voicestack-notes", ["notes.list"]),
    ]
    assert [m.name for m in apps[1].migrations] == ["notes", "notes_search"]


def test_without_the_variable_every_installed_plugin_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOAD_TOOLS_ENV, raising=False)
    loaded = names(load_tools())
    assert [t for t in loaded if t in CLOCK_TOOLS + NOTES_TOOLS] == CLOCK_TOOLS + NOTES_TOOLS


def test_the_variable_limits_what_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOAD_TOOLS_ENV, " notes ")
    assert names(load_tools()) == NOTES_TOOLS
    monkeypatch.setenv(LOAD_TOOLS_ENV, "")
    empty = load_tools([draw])
    assert (names(empty), empty.failures, empty.modules) == ([("draw", "")], [], [])


def test_a_named_plugin_that_is_not_installed_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOAD_TOOLS_ENV, "clock,weather")
    tool_set = load_tools()
    assert names(tool_set) == CLOCK_TOOLS
    assert tool_set.failures == [
        PluginFailure(
            "",
            "weather",
            "LookupError: no installed plugin has the entry point 'weather' in group "
            "'voicestack.tools'",
        )
    ]


def test_a_broken_plugin_is_reported_not_raised(
    fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist(
        "broken-plugin",
        {"broken": "broken_tools_plugin", "weird": "weird_tools_plugin:VALUE"},
        {
            "broken_tools_plugin": "raise ImportError('needs the frobnicator library')\n",
            "weird_tools_plugin": "VALUE = 42\n",
        },
    )
    monkeypatch.setenv(LOAD_TOOLS_ENV, "broken,clock,weird")
    tool_set = load_tools()
    assert names(tool_set) == CLOCK_TOOLS
    assert tool_set.failures == [
        PluginFailure("broken-plugin", "broken", "ImportError: needs the frobnicator library"),
        PluginFailure(
            "broken-plugin",
            "weird",
            "TypeError: entry point 'weird' resolved to int; it must name a Tool, a list of "
            "Tools or a module.",
        ),
    ]
    described = tool_set.describe()
    assert [d["name"] for d in described] == [name for name, _ in CLOCK_TOOLS] + [
        "broken",
        "weird",
    ]
    assert described[-2] == {
        "name": "broken",
        "description": "",
        "schema": None,
        "plugin": "broken-plugin",
        "status": "failed",
        "error": "ImportError: needs the frobnicator library",
    }


def test_entry_points_may_name_a_tool_or_a_list(
    fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = """
        from voicestack.agent.tools import tool

        @tool
        async def one(ctx):
            "One."
            return 1

        @tool
        async def two(ctx):
            "Two."
            return 2

        BOTH = [one, two]
    """
    fake_dist(
        "pair-plugin",
        {"single": "pair_tools:one", "pair": "pair_tools:BOTH"},
        {"pair_tools": source},
    )
    monkeypatch.setenv(LOAD_TOOLS_ENV, "pair,single")
    tool_set = load_tools()
    # Entry points load in name order; the same tool twice is offered under two names.
    assert names(tool_set) == [
        ("one", "pair-plugin"),
        ("two", "pair-plugin"),
        ("one_2", "pair-plugin"),
    ]
    assert tool_set.apps() == []


def test_duplicate_names_are_made_unique_with_a_warning(
    fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    source = """
        from voicestack.agent.tools import tool

        @tool
        async def current_time(ctx):
            "The time on Mars."
            return "sol 1"

        alias = current_time
    """
    fake_dist("mars-clock", {"mars": "mars_tools"}, {"mars_tools": source})
    monkeypatch.setenv(LOAD_TOOLS_ENV, "clock,mars")
    long_name = "x" * 64
    extra = [draw, draw, Tool(long_name, "", NoToolArgs, ping.run)]
    extra.append(Tool(long_name, "", NoToolArgs, ping.run, plugin="builtin"))
    with caplog.at_level(logging.WARNING, logger="voicestack.agent.tool_loading"):
        tool_set = load_tools(extra)
    assert names(tool_set) == [
        ("draw", ""),
        ("draw_2", ""),
        (long_name, ""),
        ("x" * 62 + "_2", "builtin"),
        *CLOCK_TOOLS,
        ("current_time_2", "mars-clock"),
    ]
    assert tool_set.get("current_time_2").description == "The time on Mars."
    assert [r.getMessage() for r in caplog.records] == [
        "tool 'draw' of voicestack is already taken; it is offered as 'draw_2'",
        f"tool '{long_name}' of builtin is already taken; it is offered as '{'x' * 62}_2'",
        "tool 'current_time' of mars-clock is already taken; it is offered as 'current_time_2'",
    ]


def test_a_tool_set_refuses_duplicate_names() -> None:
    with pytest.raises(ValueError, match="must be unique"):
        ToolSet([draw, draw])
