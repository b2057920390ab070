"""Named agents: listed by GET /api/agents, `agents.list` and `voicestack agents list`; a thread
answers as its agent, with that agent's model, instructions, temperature and tools.

One server for the module runs the agents of tests/apps/agents.py and a config file's
`[agents.researcher]`; every test works in threads of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.apps.agents import BILLING
from tests.support.agent import (
    INSTRUCTIONS,
    Threads,
    chat_bodies,
    ended,
    feed,
    marker,
    read_until,
    snapshot,
    tool_call_rows,
)
from tests.support.agents import converse, create_thread, running_agents_server
from tests.support.cli import invoke, server_vars
from tests.support.server import ServerProcess
from tests.support.tool_calls import call_plan
from tests.support.voice import Recordings, post_form, posted, requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

TEST_TOOLS = ["slow_count", "guarded_echo", "explode", "sleepy"]
LISTED = [
    {
        "name": "assistant",
        "description": "",
        "model": "gpt-4o-mini",
        "tools": None,
        "voice": "alloy",
        "handoffs": [],
    },
    {
        "name": "researcher",
        "description": "Finds facts.",
        "model": "research-model",
        "tools": ["sleepy", "slow_count"],
        "voice": "alloy",
        "handoffs": [],
    },
    {
        "name": "support",
        "description": "The front desk: any question about Example Co.",
        "model": "support-model",
        "tools": ["slow_count"],
        "voice": "alloy",
        "handoffs": ["billing"],
    },
    {
        "name": "billing",
        "description": "Questions about invoices, refunds and payments.",
        "model": "billing-model",
        "tools": [],
        "voice": "verse",
        "handoffs": [],
    },
    {
        "name": "ping",
        "description": "",
        "model": "ping-model",
        "tools": None,
        "voice": "alloy",
        "handoffs": ["pong"],
    },
    {
        "name": "pong",
        "description": "",
        "model": "pong-model",
        "tools": None,
        "voice": "alloy",
        "handoffs": ["ping"],
    },
]
UNKNOWN_AGENT = {
    "error": {
        "code": "unknown_agent",
        "message": "No agent is named 'nobody'; GET /api/agents lists them.",
    }
}


@pytest.fixture(scope="module")
def agents_server(
    fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with running_agents_server(tmp_path_factory.mktemp("agents"), fake_openai.api_base) as server:
        yield server


@pytest.fixture
def server(agents_server: ServerProcess) -> ServerProcess:
    return agents_server


def tool_names(body: dict[str, Any]) -> list[str]:
    """The names of the tools a chat request offered."""
    return [tool["function"]["name"] for tool in body.get("tools", [])]


async def test_the_agents_are_listed_by_the_route_and_the_query(client: httpx.AsyncClient) -> None:
    listed = await client.get("/api/agents")
    assert (listed.status_code, listed.json()) == (200, LISTED)
    queried = await client.post("/api/query/agents.list", json={"args": {}})
    assert (queried.status_code, queried.json()["value"]) == (200, LISTED)


async def test_voicestack_agents_list_prints_them(server: ServerProcess) -> None:
    as_json = invoke(["agents", "list", "--json"], env=server_vars(server))
    assert (as_json.exit_code, json.loads(as_json.stdout)) == (0, LISTED)
    plain = invoke(["agents", "list"], env=server_vars(server))
    assert plain.exit_code == 0, plain.stderr
    assert plain.stdout.splitlines() == [
        "assistant\tgpt-4o-mini\talloy\tall\t\t",
        "researcher\tresearch-model\talloy\tsleepy, slow_count\t\tFinds facts.",
        "support\tsupport-model\talloy\tslow_count\tbilling\tThe front desk: any question about"
        " Example Co.",
        "billing\tbilling-model\tverse\tnone\t\tQuestions about invoices, refunds and payments.",
        "ping\tping-model\talloy\tall\tpong\t",
        "pong\tpong-model\talloy\tall\tping\t",
    ]


async def test_each_agent_s_model_instructions_and_temperature_reach_the_provider(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    asked = {}
    for agent in (None, "billing", "researcher"):
        mark = marker()
        text = f"{mark} hello"
        await converse(client, threads, await create_thread(client, agent), text)
        (body,) = chat_bodies(fake, mark)
        asked[agent] = (
            body["model"],
            body["messages"],
            body.get("temperature"),
            tool_names(body),
        )
        assert body["messages"][-1] == {"role": "user", "content": text}
    assert {agent: (m, msgs[0], t, tools) for agent, (m, msgs, t, tools) in asked.items()} == {
        None: ("gpt-4o-mini", {"role": "system", "content": INSTRUCTIONS}, None, TEST_TOOLS),
        "billing": ("billing-model", {"role": "system", "content": BILLING}, 0.2, []),
        "researcher": (
            "research-model",
            {"role": "system", "content": "You look things up."},
            None,
            ["sleepy", "slow_count"],
        ),
    }


@requires_espeak
async def test_a_spoken_reply_speaks_in_its_agent_s_voice(
    fake: FakeOpenAI, client: httpx.AsyncClient, recordings: Recordings
) -> None:
    mark = marker()
    fake.script(
        {"kind": "transcription", "transcript": f"is my invoice paid {mark}"},
        {"match": mark, "text": "It is paid."},
    )
    thread_id = await create_thread(client, "billing")
    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        voice = posted(await post_form(client, thread_id, recordings.audio("wav"), speak="true"))
        await read_until(stream, ended(voice.reply_id))
    said = [(r["body"]["input"], r["body"]["voice"]) for r in fake.requests("speech")]
    assert said == [("It is paid.", "verse")]


async def test_a_thread_and_its_reply_carry_their_agent(
    client: httpx.AsyncClient, threads: Threads
) -> None:
    thread_id = await create_thread(client, "billing")
    text = f"{marker()} my invoice"
    await converse(client, threads, thread_id, text)
    thread = await threads.get(thread_id)
    assert thread["agent"] == "billing"
    assert [(m["role"], m["agent"], m["status"]) for m in thread["messages"]] == [
        ("user", None, "complete"),
        ("assistant", "billing", "complete"),
    ]
    listed = (await client.get("/api/threads")).json()
    assert [t["agent"] for t in listed if t["id"] == thread_id] == ["billing"]
    default = await threads.get(await create_thread(client, None))
    assert default["agent"] == "assistant"


async def test_an_agent_may_call_only_its_own_tools(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    fake.script(
        call_plan(mark, "explode", {}, "call_explode"),
        {"match": mark, "text": "I cannot do that."},
    )
    thread_id = await create_thread(client, "support")
    _, events = await converse(client, threads, thread_id, f"{mark} blow it up")

    (row,) = {row["id"]: row for row in tool_call_rows(events)}.values()
    assert (row["name"], row["status"], row["error"]) == (
        "explode",
        "failed",
        "There is no tool named 'explode'. Available tools: slow_count, transfer_to_billing.",
    )
    first, _ = chat_bodies(fake, mark)
    assert first["tools"][1] == {
        "type": "function",
        "function": {
            "name": "transfer_to_billing",
            "description": "Questions about invoices, refunds and payments.",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    assert tool_names(first) == ["slow_count", "transfer_to_billing"]


async def test_a_thread_for_an_unknown_agent_is_refused(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/threads", json={"agent": "nobody"})
    assert (created.status_code, created.json()) == (422, UNKNOWN_AGENT)
    called = await client.post("/api/mutation/threads.create", json={"args": {"agent": "nobody"}})
    assert (called.status_code, called.json()) == (422, UNKNOWN_AGENT)


async def test_thread_new_agent_creates_a_thread_of_that_agent(
    server: ServerProcess, threads: Threads
) -> None:
    created = invoke(["thread", "new", "--agent", "billing"], env=server_vars(server))
    assert created.exit_code == 0, created.stderr
    assert (await threads.get(created.stdout.strip()))["agent"] == "billing"
    refused = invoke(["thread", "new", "--agent", "nobody"], env=server_vars(server))
    assert (refused.exit_code, refused.stdout, refused.stderr) == (
        1,
        "",
        "error: No agent is named 'nobody'; GET /api/agents lists them. (unknown_agent)\n",
    )
