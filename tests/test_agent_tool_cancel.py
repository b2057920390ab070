"""Stopping a reply while its tool calls run or wait: no call is left unfinished, and the
store goes on taking writes."""

from __future__ import annotations

import contextlib

import anyio
import httpx
import pytest

from tests.support.agent import (
    StartAgentServer,
    Threads,
    drain,
    ended,
    feed,
    marker,
    read_until,
    snapshot,
)
from tests.support.api import error_of
from tests.support.tool_calls import TOOL_SERVER_ARGS, call_plan
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, pytest.mark.agent_server(*TOOL_SERVER_ARGS)]


async def test_cancelling_a_reply_leaves_no_tool_call_unfinished(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    # A stopped reply runs none of its calls any more; a row left `running` or
    # `awaiting_approval` would show a spinner or an Approve button for ever.
    mark = marker()
    fake.script(
        {
            "match": mark,
            "tool_calls": [
                {"name": "slow_count", "arguments": {"n": 50, "delay_s": 0.1}, "id": "call_slow"},
                {"name": "guarded_echo", "arguments": {"text": "later"}, "id": "call_later"},
            ],
        }
    )
    thread_id = await threads.create()
    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        _, reply_id = await threads.send(thread_id, f"{mark} count for long")
        await read_until(stream, lambda e: e.event == "tool_call" and e.json["progress"] == 0.02)
        await threads.cancel(thread_id)
        await read_until(stream, ended(reply_id))
        await drain(stream, 0.3)

    calls = (await threads.get(thread_id))["toolCalls"]
    assert [(c["callId"], c["status"]) for c in calls] == [
        ("call_slow", "failed"),
        ("call_later", "failed"),
    ]
    # The wording of the reason is the server's to choose; it must say something.
    assert [isinstance(c["error"], str) and c["error"] != "" for c in calls] == [True, True]
    approve = await client.post(
        "/api/mutation/tool_calls.approve", json={"args": {"id": calls[1]["id"]}}
    )
    error_of(approve, 409, "not_awaiting_approval")


async def test_cancelling_replies_mid_write_never_stops_the_store(
    fake: FakeOpenAI, start_agent_server: StartAgentServer
) -> None:
    # slow_count with no delay writes progress back to back, so a reply is nearly always
    # waiting on a write when its cancel arrives. A write whose waiter was cancelled must not
    # take the database writer down with it. Own server: a broken writer would break every
    # later test on the shared one.
    server = start_agent_server(fake.api_base)
    async with server.client() as client:
        threads = Threads(client)
        for _ in range(3):
            thread_ids = [await threads.create() for _ in range(4)]
            async with contextlib.AsyncExitStack() as stack:
                streams = [
                    await stack.enter_async_context(feed(client, thread_id))
                    for thread_id in thread_ids
                ]
                replies = []
                for thread_id, stream in zip(thread_ids, streams, strict=True):
                    await snapshot(stream)
                    mark = marker()
                    fake.script(call_plan(mark, "slow_count", {"n": 1000, "delay_s": 0}, "c"))
                    replies.append((await threads.send(thread_id, f"{mark} count"))[1])
                for stream in streams:
                    await read_until(stream, lambda e: (e.json.get("progress") or 0) >= 0.01)
                async with anyio.create_task_group() as group:
                    for thread_id in thread_ids:
                        group.start_soon(threads.cancel, thread_id)
                for stream, reply_id in zip(streams, replies, strict=True):
                    stopped = (await read_until(stream, ended(reply_id)))[-1].json
                    assert (stopped["status"], stopped["error"]["code"]) == (
                        "interrupted",
                        "cancelled",
                    )
        # The store still takes writes.
        await threads.create()
