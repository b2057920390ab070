"""Handoff: an agent's `transfer_to_NAME` tool moves the thread to another agent, and the same
reply goes on as that agent; a reply hands off at most --max-handoffs times (here 3, the default).

One server for the module runs the agents of tests/apps/agents.py; every test works in threads
of its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.apps.agents import BILLING, SUPPORT
from tests.support.agent import Threads, chat_bodies, marker
from tests.support.agents import converse, create_thread, running_agents_server
from tests.support.server import ServerProcess
from tests.support.tool_calls import assistant_calls, call_plan, tool_result
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

LIMIT = (
    "Not transferred: a reply may hand off at most 3 times (--max-handoffs), and this one has."
    " Answer the user yourself."
)


@pytest.fixture(scope="module")
def agents_server(
    fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with running_agents_server(tmp_path_factory.mktemp("handoff"), fake_openai.api_base) as server:
        yield server


@pytest.fixture
def server(agents_server: ServerProcess) -> ServerProcess:
    return agents_server


async def test_a_transfer_moves_the_thread_and_the_reply_goes_on_as_the_new_agent(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    fake.script(
        call_plan(mark, "transfer_to_billing", {}, "call_transfer"),
        {"match": mark, "text": "Billing here: your refund is on its way."},
    )
    thread_id = await create_thread(client, "support")
    question = f"{mark} where is my refund?"
    reply_id, _ = await converse(client, threads, thread_id, question)

    before, after = chat_bodies(fake, mark)
    assert (before["model"], before["messages"]) == (
        "support-model",
        [{"role": "system", "content": SUPPORT}, {"role": "user", "content": question}],
    )
    assert (after["model"], after["temperature"], "tools" in after) == ("billing-model", 0.2, False)
    assert after["messages"] == [
        {"role": "system", "content": BILLING},
        {"role": "user", "content": question},
        assistant_calls(("call_transfer", "transfer_to_billing", {})),
        tool_result("call_transfer", '{"agent":"billing"}'),
        {"role": "system", "content": "Transferred to billing"},
    ]
    thread = await threads.get(thread_id)
    assert thread["agent"] == "billing"
    assert [(m["id"], m["role"], m["agent"], m["text"]) for m in thread["messages"]] == [
        (thread["messages"][0]["id"], "user", None, question),
        (reply_id, "assistant", "billing", "Billing here: your refund is on its way."),
        (thread["messages"][2]["id"], "system", None, "Transferred to billing"),
    ]
    assert [(c["name"], c["status"], c["result"]) for c in thread["toolCalls"]] == [
        ("transfer_to_billing", "done", {"agent": "billing"})
    ]

    # The thread stays with billing: the next message goes straight to it, note included.
    follow_up = f"{mark} thanks"
    await converse(client, threads, thread_id, follow_up)
    *_, later = chat_bodies(fake, mark)
    assert (later["model"], later["messages"][0], later["messages"][-2:]) == (
        "billing-model",
        {"role": "system", "content": BILLING},
        [
            {"role": "system", "content": "Transferred to billing"},
            {"role": "user", "content": follow_up},
        ],
    )


async def test_a_reply_hands_off_at_most_max_handoffs_times(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    targets = ["pong", "ping", "pong", "ping"]
    fake.script(
        *[call_plan(mark, f"transfer_to_{t}", {}, f"call_{i}") for i, t in enumerate(targets)],
        {"match": mark, "text": "Pong stays."},
    )
    thread_id = await create_thread(client, "ping")
    reply_id, events = await converse(client, threads, thread_id, f"{mark} bounce")

    assert (events[-1].json["id"], events[-1].json["status"]) == (reply_id, "complete")
    bodies = chat_bodies(fake, mark)
    assert [b["model"] for b in bodies] == [
        "ping-model",
        "pong-model",
        "ping-model",
        "pong-model",
        "pong-model",
    ]
    assert bodies[-1]["messages"][-1] == tool_result("call_3", f"Error: {LIMIT}")
    thread = await threads.get(thread_id)
    assert thread["agent"] == "pong"
    assert [(c["name"], c["status"], c["error"]) for c in thread["toolCalls"]] == [
        ("transfer_to_pong", "done", None),
        ("transfer_to_ping", "done", None),
        ("transfer_to_pong", "done", None),
        ("transfer_to_ping", "failed", LIMIT),
    ]
    assert [(m["role"], m["agent"], m["text"]) for m in thread["messages"][1:]] == [
        ("assistant", "pong", "Pong stays."),
        ("system", None, "Transferred to pong"),
        ("system", None, "Transferred to ping"),
        ("system", None, "Transferred to pong"),
    ]


async def test_a_person_still_answers_in_an_agent_s_thread(
    client: httpx.AsyncClient, threads: Threads
) -> None:
    thread_id = await create_thread(client, "support")
    posted = await threads.mutation(
        "messages.post", {"threadId": thread_id, "text": "A person here."}
    )
    thread = await threads.get(thread_id)
    assert thread["agent"] == "support"
    assert [(m["id"], m["role"], m["agent"], m["text"]) for m in thread["messages"]] == [
        (posted["messageId"], "assistant", None, "A person here.")
    ]
