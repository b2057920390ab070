"""Tool calls as the fake model makes them and as the model is sent them back, and as the feed
shows their rows."""

from __future__ import annotations

import json
from typing import Any

from tests.support.agent import tool_call_rows
from tests.support.sse import Event

# The flags of the server the tool-call tests share: a slow tool fails after a second, and a
# reply makes at most three requests to the model.
TOOL_SERVER_ARGS = ("--tool-timeout-s", "1", "--max-steps", "3")


def call_plan(mark: str, name: str, arguments: Any, call_id: str) -> dict[str, Any]:
    """A plan: the model calls one tool."""
    return {"match": mark, "tool_calls": [{"name": name, "arguments": arguments, "id": call_id}]}


def arguments(value: Any) -> str:
    """Tool arguments as the fake sends them on the wire."""
    return json.dumps(value, separators=(",", ":"))


def assistant_calls(*calls: tuple[str, str, Any]) -> dict[str, Any]:
    """The assistant message that carries tool calls, as the model is sent it back."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": arguments(args)},
            }
            for call_id, name, args in calls
        ],
    }


def tool_result(call_id: str, content: str) -> dict[str, Any]:
    """A tool message as the model is sent it."""
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def changes(events: list[Event], call_id: str) -> list[tuple[Any, ...]]:
    """How one tool call's row changed: (status, progress, result, error) per feed event."""
    return [
        (row["status"], row["progress"], row["result"], row["error"])
        for row in tool_call_rows(events)
        if row["callId"] == call_id
    ]
