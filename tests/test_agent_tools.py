"""Tool calls end to end: the fake model calls the test-tools plugin's tools through a real server.

The tools come from `tests/plugins/voicestack-testtools` (installed with pip, loaded with
VOICESTACK_LOAD_TOOLS=testtools); one FakeOpenAI and one server serve the module.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import voicestack_testtools

from tests.support.agent import (
    INSTRUCTIONS,
    Threads,
    agent_args,
    agent_server,
    chat_bodies,
    drain,
    ended,
    feed,
    marker,
    outline,
    read_until,
    snapshot,
    tool_call_rows,
)
from tests.support.api import error_of
from tests.support.server import ServerProcess, server_env
from tests.support.sse import Event
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

EXPECTED_COUNT = "n (integer, required), delay_s (number, required)"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake: FakeOpenAI) -> None:
    fake.reset()


@pytest.fixture(scope="module")
def server(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = agent_args(fake.api_base, "--tool-timeout-s", "1", "--max-steps", "3")
    with agent_server(tmp_path_factory.mktemp("tools"), args) as server:
        yield server


@pytest.fixture
def threads(client: httpx.AsyncClient) -> Threads:
    return Threads(client)


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


async def ask(
    client: httpx.AsyncClient, threads: Threads, text: str
) -> tuple[str, str, str, list[Event]]:
    """Send `text` in a new thread and follow the feed to the reply's end."""
    thread_id = await threads.create()
    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        user_id, reply_id = await threads.send(thread_id, text)
        events = await read_until(stream, ended(reply_id))
    return thread_id, user_id, reply_id, events


async def test_a_tool_call_reports_progress_and_its_result_goes_back_to_the_model(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    count = {"n": 3, "delay_s": 0.05}
    fake.script(
        {**call_plan(mark, "slow_count", count, "call_count"), "usage": {"prompt_tokens": 10}},
        {"match": mark, "text": "I counted to 3.", "usage": {"prompt_tokens": 20}},
    )
    question = f"{mark} count to three"
    thread_id, user_id, reply_id, events = await ask(client, threads, question)

    rows = tool_call_rows(events)
    row_id = rows[0]["id"]
    text_events = len(events) - 3 - len(rows) - 1
    assert outline(events) == [
        ("message", user_id, "complete"),
        ("message", reply_id, "pending"),
        ("message", reply_id, "streaming"),
        ("tool_call", row_id, "pending"),
        *[("tool_call", row_id, "running")] * 4,
        ("tool_call", row_id, "done"),
        *[("delta", reply_id, None)] * text_events,
        ("message", reply_id, "complete"),
    ]
    assert changes(events, "call_count") == [
        ("pending", None, None, None),
        ("running", None, None, None),
        ("running", 1 / 3, None, None),
        ("running", 2 / 3, None, None),
        ("running", 1.0, None, None),
        ("done", 1.0, {"counted": 3}, None),
    ]
    done = rows[-1]
    assert done == {
        "id": row_id,
        "threadId": thread_id,
        "messageId": reply_id,
        "callId": "call_count",
        "step": 1,
        "name": "slow_count",
        "args": count,
        "status": "done",
        "progress": 1.0,
        "result": {"counted": 3},
        "error": None,
        "createdAt": rows[0]["createdAt"],
        "updatedAt": done["updatedAt"],
    }
    final = events[-1].json
    assert (final["text"], final["usage"]["toolCalls"], final["usage"]["promptTokens"]) == (
        "I counted to 3.",
        1,
        30,
    )
    first, second = chat_bodies(fake, mark)
    assert [t["function"]["name"] for t in first["tools"]] == [
        "slow_count",
        "guarded_echo",
        "explode",
        "sleepy",
    ]
    assert second["messages"] == [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": question},
        assistant_calls(("call_count", "slow_count", count)),
        tool_result("call_count", '{"counted":3}'),
    ]
    assert (await threads.get(thread_id))["toolCalls"] == [done]


async def test_invalid_arguments_get_one_corrective_retry(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    bad, good = {"n": "three", "delay_s": 0}, {"n": 2, "delay_s": 0}
    fake.script(
        call_plan(mark, "slow_count", bad, "call_bad"),
        call_plan(mark, "slow_count", good, "call_good"),
        {"match": mark, "text": "Counted to 2."},
    )
    _, _, _, events = await ask(client, threads, f"{mark} count to two")

    error = (
        "Invalid arguments for tool 'slow_count':\n"
        '- n: Input should be a valid integer, unable to parse string as an integer (got "three")\n'
        f"Expected arguments: {EXPECTED_COUNT}. Call slow_count again with corrected arguments."
    )
    assert changes(events, "call_bad") == [("failed", None, None, error)]
    assert changes(events, "call_good") == [
        ("pending", None, None, None),
        ("running", None, None, None),
        ("running", 0.5, None, None),
        ("running", 1.0, None, None),
        ("done", 1.0, {"counted": 2}, None),
    ]
    assert (events[-1].json["status"], events[-1].json["text"]) == ("complete", "Counted to 2.")
    last = chat_bodies(fake, mark)[-1]["messages"]
    assert last[2:] == [
        assistant_calls(("call_bad", "slow_count", bad)),
        tool_result("call_bad", f"Error: {error}"),
        assistant_calls(("call_good", "slow_count", good)),
        tool_result("call_good", '{"counted":2}'),
    ]


async def test_arguments_invalid_twice_fail_and_the_reply_still_completes(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    bad, worse = {"n": "three", "delay_s": 0}, {"delay_s": 0}
    fake.script(
        call_plan(mark, "slow_count", bad, "call_bad"),
        call_plan(mark, "slow_count", worse, "call_worse"),
        {"match": mark, "text": "I could not count."},
    )
    _, _, _, events = await ask(client, threads, f"{mark} count")

    again = (
        "Invalid arguments for tool 'slow_count':\n- n: Field required\n"
        f"Expected arguments: {EXPECTED_COUNT}. The arguments were invalid again; do not call"
        " slow_count again."
    )
    assert [row["status"] for row in tool_call_rows(events)] == ["failed", "failed"]
    assert changes(events, "call_worse") == [("failed", None, None, again)]
    assert (events[-1].json["status"], events[-1].json["text"]) == (
        "complete",
        "I could not count.",
    )
    assert chat_bodies(fake, mark)[-1]["messages"][-1] == tool_result(
        "call_worse", f"Error: {again}"
    )


async def test_a_tool_that_needs_approval_runs_once_approved(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    fake.script(
        call_plan(mark, "guarded_echo", {"text": "hello"}, "call_echo"),
        {"match": mark, "text": "Echoed."},
    )
    thread_id = await threads.create()
    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        _, reply_id = await threads.send(thread_id, f"{mark} echo hello")
        waiting = await read_until(stream, lambda e: e.event == "tool_call")
        row_id = waiting[-1].json["id"]
        approved = await threads.mutation("tool_calls.approve", {"id": row_id})
        events = waiting + await read_until(stream, ended(reply_id))

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
    thread_id = await threads.create()
    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        _, reply_id = await threads.send(thread_id, f"{mark} echo secret")
        waiting = await read_until(stream, lambda e: e.event == "tool_call")
        row_id = waiting[-1].json["id"]
        denied = await threads.mutation("tool_calls.deny", {"id": row_id})
        events = waiting + await read_until(stream, ended(reply_id))

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


async def test_a_failing_tool_becomes_an_error_result(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    fake.script(
        call_plan(mark, "explode", {}, "call_boom"),
        call_plan(mark, "sleepy", {"seconds": 5}, "call_sleep"),
        {"match": mark, "text": "Both tools failed."},
    )
    _, _, _, events = await ask(client, threads, f"{mark} try the tools")

    boom = "RuntimeError: the explode tool always fails"
    assert changes(events, "call_boom") == [
        ("pending", None, None, None),
        ("running", None, None, None),
        ("failed", None, None, boom),
    ]
    # --tool-timeout-s 1 stops the five-second sleep.
    assert changes(events, "call_sleep") == [
        ("pending", None, None, None),
        ("running", None, None, None),
        ("failed", None, None, "timed out after 1 s"),
    ]
    final = events[-1].json
    assert (final["status"], final["text"]) == ("complete", "Both tools failed.")
    assert chat_bodies(fake, mark)[-1]["messages"][-4:] == [
        assistant_calls(("call_boom", "explode", {})),
        tool_result("call_boom", f"Error: {boom}"),
        assistant_calls(("call_sleep", "sleepy", {"seconds": 5})),
        tool_result("call_sleep", "Error: timed out after 1 s"),
    ]


def listed(tool: Any) -> dict[str, Any]:
    """A test tool as GET /api/tools lists it."""
    return {
        "name": tool.name,
        "description": tool.description,
        "schema": tool.args_model.model_json_schema(),
        "plugin": "voicestack-testtools",
        "status": "loaded",
        "error": None,
    }


TEST_TOOLS = [
    voicestack_testtools.slow_count,
    voicestack_testtools.guarded_echo,
    voicestack_testtools.explode,
    voicestack_testtools.sleepy,
]


async def test_the_tools_list_shows_the_plugin_tools(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/tools")

    assert response.status_code == 200
    assert response.json() == [listed(tool) for tool in TEST_TOOLS]
    assert [(t["name"], t["description"]) for t in response.json()] == [
        (
            "slow_count",
            "Count from 1 to n, one step every delay_s seconds, reporting progress after each"
            " step.",
        ),
        ("guarded_echo", "Send the text back, once a person has approved the call."),
        ("explode", "Always fail."),
        ("sleepy", "Sleep for the given number of seconds, then say how long it slept."),
    ]


def broken_plugin(site: Path) -> None:
    """Install (on `site`, a path entry) a plugin distribution whose module cannot import."""
    site.mkdir()
    (site / "voicestack_broken_tools.py").write_text(
        "import voicestack_missing_dependency  # not installed anywhere\n"
    )
    dist_info = site / "voicestack_broken_tools-0.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: voicestack-broken-tools\nVersion: 0.1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[voicestack.tools]\nbroken = voicestack_broken_tools\n"
    )


async def test_a_plugin_that_fails_to_load_is_listed_and_the_server_still_serves(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    broken_plugin(site)
    env = {
        "VOICESTACK_LOAD_TOOLS": "testtools,broken,not_installed",
        "PYTHONPATH": os.pathsep.join([str(site), server_env()["PYTHONPATH"]]),
    }
    mark = marker()
    fake.script(
        call_plan(mark, "slow_count", {"n": 1, "delay_s": 0}, "call_one"),
        {"match": mark, "text": "Counted."},
    )
    with agent_server(tmp_path / "server", agent_args(fake.api_base), env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
            tools = (await client.get("/api/tools")).json()
            health = await client.get("/healthz")
            _, _, _, events = await ask(client, Threads(client), f"{mark} count to one")

    assert tools == [
        *[listed(tool) for tool in TEST_TOOLS],
        {
            "name": "broken",
            "description": "",
            "schema": None,
            "plugin": "voicestack-broken-tools",
            "status": "failed",
            "error": "ModuleNotFoundError: No module named 'voicestack_missing_dependency'",
        },
        {
            "name": "not_installed",
            "description": "",
            "schema": None,
            "plugin": "",
            "status": "failed",
            "error": "LookupError: no installed plugin has the entry point 'not_installed' in"
            " group 'voicestack.tools'",
        },
    ]
    assert health.status_code == 200
    assert changes(events, "call_one")[-1] == ("done", 1.0, {"counted": 1}, None)
    assert (events[-1].json["status"], events[-1].json["text"]) == ("complete", "Counted.")


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
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    # slow_count with no delay writes progress back to back, so a reply is nearly always
    # waiting on a write when its cancel arrives. A write whose waiter was cancelled must not
    # take the database writer down with it. Own server: a broken writer would break every
    # later test of the module.
    with agent_server(tmp_path, agent_args(fake.api_base)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
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


async def test_the_last_step_offers_no_tools(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    # The module's server runs with --max-steps 3.
    mark = marker()
    one = {"n": 1, "delay_s": 0}
    fake.script(
        call_plan(mark, "slow_count", one, "call_1"),
        call_plan(mark, "slow_count", one, "call_2"),
        {"match": mark, "text": "Done counting."},
    )
    _, _, _, events = await ask(client, threads, f"{mark} count twice")

    bodies = chat_bodies(fake, mark)
    assert [len(body.get("tools", [])) for body in bodies] == [4, 4, 0]
    assert (events[-1].json["status"], events[-1].json["text"]) == ("complete", "Done counting.")


async def test_a_tool_call_in_the_last_step_is_not_run(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    # The last step offers no tools; a model that calls one anyway must not have it run,
    # since its result could never reach the model.
    mark = marker()
    one = {"n": 1, "delay_s": 0}
    fake.script(*[call_plan(mark, "slow_count", one, f"call_{n}") for n in (1, 2, 3)])
    _, _, _, events = await ask(client, threads, f"{mark} count for ever")

    assert len(chat_bodies(fake, mark)) == 3
    assert events[-1].json["status"] in ("complete", "failed"), events[-1].json
    assert [changes(events, f"call_{n}")[-1][0] for n in (1, 2, 3)] == ["done", "done", "failed"]
