"""A person approves or denies a tool call that waits for approval, through a real server.

`guarded_echo` of the test-tools plugin needs approval; the server is the one the tool-call
modules share (TOOL_SERVER_ARGS), and every test works in threads of its own.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.agent import (
    Threads,
    chat_bodies,
    ended,
    feed,
    marker,
    read_until,
    snapshot,
)
from tests.support.api import error_of
from tests.support.sse import Event
from tests.support.tool_calls import TOOL_SERVER_ARGS, call_plan, changes, tool_result
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, pytest.mark.agent_server(*TOOL_SERVER_ARGS)]


async def decide(
    client: httpx.AsyncClient, threads: Threads, text: str, mutation: str
) -> tuple[str, Any, list[Event]]:
    """Send `text` in a new thread, answer the first tool call's row with `mutation` once it
    appears, and follow the feed to the reply's end: (row id, the mutation's value, events)."""
    thread_id = await threads.create()
    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        _, reply_id = await threads.send(thread_id, text)
        waiting = await read_until(stream, lambda e: e.event == "tool_call")
        row_id = waiting[-1].json["id"]
        decided = await threads.mutation(mutation, {"id": row_id})
        events = waiting + await read_until(stream, ended(reply_id))
    return row_id, decided, events


async def test_a_tool_that_needs_approval_runs_once_approved(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    fake.script(
        call_plan(mark, "guarded_echo", {"text": "hello"}, "call_echo"),
        {"match": mark, "text": "Echoed."},
    )
    row_id, approved, events = await decide(
        client, threads, f"{mark} echo hello", "tool_calls.approve"
    )

    assert approved == {"id": row_id, "status": "pending"}
    assert changes(events, "call_echo") == [
        ("awaiting_approval", None, None, None),
        ("pending", None, None, None),
        ("running", None, None, None),
        ("done", None, {"echo": "hello"}, None),
    ]
    assert (events[-1].json["status"], events[-1].json["text"]) == ("complete", "Echoed.")
    assert chat_bodies(fake, mark)[-1]["messages"][-1] == tool_result(
        "call_echo", '{"echo":"hello"}'
    )
    again = await client.post("/api/mutation/tool_calls.approve", json={"args": {"id": row_id}})
    error_of(again, 409, "not_awaiting_approval")


async def test_a_denied_tool_call_fails_and_the_model_is_told(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    fake.script(
        call_plan(mark, "guarded_echo", {"text": "secret"}, "call_echo"),
        {"match": mark, "text": "Understood, I will not echo it."},
    )
    row_id, denied, events = await decide(client, threads, f"{mark} echo secret", "tool_calls.deny")

    assert denied == {"id": row_id, "status": "failed"}
    assert changes(events, "call_echo") == [
        ("awaiting_approval", None, None, None),
        ("failed", None, None, "denied by the user"),
    ]
    assert (events[-1].json["status"], events[-1].json["text"]) == (
        "complete",
        "Understood, I will not echo it.",
    )
    assert chat_bodies(fake, mark)[-1]["messages"][-1] == tool_result(
        "call_echo", "Error: the user denied this tool call."
    )
