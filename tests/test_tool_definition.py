"""The Tool object and the @tool decorator: names, descriptions, argument models, specs."""

from __future__ import annotations

import pytest

from tests.support.tools import DrawArgs, draw, make_ctx, ping
from voicestack.agent.tools import (
    NoToolArgs,
    Tool,
    ToolCtx,
    ToolOutcome,
    parse_tool_args,
    run_tool,
    tool,
)

pytestmark = pytest.mark.anyio


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
