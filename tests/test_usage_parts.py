"""A reply's usage in parts: each agent that answered in a reply is priced at its own model, the
usage of each step is kept as it comes (a cancel or a crash keeps what finished steps used, and
counts the cut step as unreported), and a transfer prepared before a handoff is checked against
the agent answering when it runs.

One server for the module runs the agents of tests/apps/agents.py with a price table (test
prices) and a `triage` agent; each test works as a user of its own, so summaries hold only its
threads. The crash test has a server of its own.
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest

from tests.support.agent import (
    StartAgentServer,
    Threads,
    chat_bodies,
    count_deltas,
    ended,
    feed,
    marker,
    read_until,
    running_agent_server,
    snapshot,
    words,
)
from tests.support.agents import AGENTS_APP, converse, create_thread
from tests.support.api import Api
from tests.support.realtime import conversation, interrupt_at, script_barge_in
from tests.support.server import ServerProcess
from tests.support.tool_calls import call_plan, tool_result
from tests.support.voice import requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

CONFIG = """
[prices."support-model"]
input_per_mtok = 1.0
output_per_mtok = 2.0

[prices."billing-model"]
input_per_mtok = 10.0
output_per_mtok = 40.0

[agents.triage]
instructions = "You route questions."
model = "support-model"
handoffs = ["billing", "support"]
"""
# 1000 prompt + 100 completion tokens at support-model's prices, 2000 + 500 at billing-model's.
SUPPORT_USED = {"prompt_tokens": 1000, "completion_tokens": 100}
SUPPORT_COST = 0.0012
BILLING_USED = {"prompt_tokens": 2000, "completion_tokens": 500}
BILLING_COST = 0.04


def config_file(workdir: Path) -> str:
    """CONFIG written in `workdir`; returns its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "parts.toml"
    path.write_text(CONFIG)
    return str(path)


@pytest.fixture(scope="module")
def parts_server(
    fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("parts")
    args = ("--app", AGENTS_APP, "--config", config_file(workdir))
    with running_agent_server(workdir, fake_openai.api_base, *args) as server:
        yield server


@pytest.fixture
def server(parts_server: ServerProcess) -> ServerProcess:
    return parts_server


@pytest.fixture
async def person(parts_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a new user of this test's own (not an admin)."""
    name = f"u{secrets.token_hex(4)}"
    async with parts_server.client(token=parts_server.create_token(name)) as http:
        yield http


def summary_row(key: str | None, used: dict[str, int], tool_calls: int, cost: float) -> dict:
    """A `usage.summary` row of one reply's part (or parts) that used `used`."""
    return {
        **({"key": key} if key is not None else {}),
        "replies": 1,
        "promptTokens": used["prompt_tokens"],
        "completionTokens": used["completion_tokens"],
        "toolCalls": tool_calls,
        "audioInSeconds": 0.0,
        "speechChars": 0,
        "speechSeconds": 0.0,
        "costUsd": cost,
        "unpricedReplies": 0,
        "unreportedSteps": 0,
    }


def cost_of(usage: dict[str, Any]) -> tuple[Any, ...]:
    """The usage figures a stopped reply is judged by."""
    keys = ("promptTokens", "completionTokens", "toolCalls", "unreportedSteps", "costUsd")
    return tuple(usage[key] for key in keys)


async def test_a_reply_that_hands_off_prices_each_agents_part_at_its_own_model(
    fake: FakeOpenAI, person: httpx.AsyncClient
) -> None:
    mark = marker()
    fake.script(
        {**call_plan(mark, "transfer_to_billing", {}, "call_transfer"), "usage": SUPPORT_USED},
        {"match": mark, "text": "Billing here: refunded.", "usage": BILLING_USED},
    )
    thread_id = await create_thread(person, "support")
    threads = Threads(person)
    reply_id, events = await converse(person, threads, thread_id, f"{mark} refund?")

    reply = events[-1].json
    assert (reply["id"], reply["agent"], reply["status"]) == (reply_id, "billing", "complete")
    assert cost_of(reply["usage"]) == (3000, 600, 1, 0, round(SUPPORT_COST + BILLING_COST, 10))
    assert (await threads.get(thread_id))["usage"]["costUsd"] == 0.0412
    by_model = (await Api(person).query("usage.summary", {"by": "model"})).value
    by_agent = (await Api(person).query("usage.summary", {"by": "agent"})).value
    assert by_model["rows"] == [
        summary_row("billing-model", BILLING_USED, 0, BILLING_COST),
        summary_row("support-model", SUPPORT_USED, 1, SUPPORT_COST),
    ]
    assert by_agent["rows"] == [
        summary_row("billing", BILLING_USED, 0, BILLING_COST),
        summary_row("support", SUPPORT_USED, 1, SUPPORT_COST),
    ]
    both = {"prompt_tokens": 3000, "completion_tokens": 600}
    assert by_model["total"] == by_agent["total"] == summary_row(None, both, 1, 0.0412)


def script_count_then_slow_text(fake: FakeOpenAI, mark: str) -> None:
    """Step 1: support calls slow_count (its usage reported); step 2: a long, slow answer."""
    count = call_plan(mark, "slow_count", {"n": 1, "delay_s": 0}, "call_count")
    fake.script(
        {**count, "usage": SUPPORT_USED},
        {"match": mark, "text": words(200), "tokens_per_second": 20},
    )


async def test_a_reply_cancelled_mid_stream_keeps_its_finished_steps_cost(
    fake: FakeOpenAI, person: httpx.AsyncClient
) -> None:
    mark = marker()
    script_count_then_slow_text(fake, mark)
    thread_id = await create_thread(person, "support")
    threads = Threads(person)
    async with feed(person, thread_id) as stream:
        await snapshot(stream)
        _, reply_id = await threads.send(thread_id, f"{mark} count")
        await read_until(stream, count_deltas(reply_id, 3))
        await threads.cancel(thread_id)
        final = (await read_until(stream, ended(reply_id)))[-1].json

    # Step 2 was cut before its usage came: counted, not priced; step 1 priced as reported.
    assert (final["status"], final["error"]["code"]) == ("interrupted", "cancelled")
    assert cost_of(final["usage"]) == (1000, 100, 1, 1, SUPPORT_COST)
    thread = await threads.get(thread_id)
    (message,) = [m for m in thread["messages"] if m["id"] == reply_id]
    assert cost_of(message["usage"]) == (1000, 100, 1, 1, SUPPORT_COST)
    assert (thread["usage"]["unreportedSteps"], thread["usage"]["costUsd"]) == (1, SUPPORT_COST)
    total = (await Api(person).query("usage.summary", {"by": "agent"})).value["total"]
    assert (total["unreportedSteps"], total["costUsd"]) == (1, SUPPORT_COST)


async def test_a_reply_cut_by_a_crash_is_priced_at_the_next_start(
    fake: FakeOpenAI, start_agent_server: StartAgentServer, tmp_path: Path
) -> None:
    args = ("--app", AGENTS_APP, "--config", config_file(tmp_path / "crash"))
    server = start_agent_server(fake.api_base, *args)
    mark = marker()
    script_count_then_slow_text(fake, mark)
    async with server.client() as client:
        threads = Threads(client)
        thread_id = await create_thread(client, "support")
        async with feed(client, thread_id) as stream:
            await snapshot(stream)
            _, reply_id = await threads.send(thread_id, f"{mark} count")
            await read_until(stream, count_deltas(reply_id, 3))
    assert await anyio.to_thread.run_sync(server.stop, signal.SIGKILL) == -signal.SIGKILL

    await anyio.to_thread.run_sync(server.start)
    async with server.client() as client:
        thread = await Threads(client).get(thread_id)

    (message,) = [m for m in thread["messages"] if m["id"] == reply_id]
    assert (message["status"], message["error"]["code"]) == ("interrupted", "server_restarted")
    assert cost_of(message["usage"]) == (1000, 100, 1, 1, SUPPORT_COST)
    assert (thread["usage"]["unreportedSteps"], thread["usage"]["costUsd"]) == (1, SUPPORT_COST)


ALREADY = "Not transferred: you are the billing agent already. Answer the user yourself."
NOT_ALLOWED = (
    "Not transferred: the billing agent answers now, and it cannot transfer to support."
    " Answer the user yourself."
)


@pytest.mark.parametrize(
    ("agent", "second", "refusal"),
    [("support", "transfer_to_billing", ALREADY), ("triage", "transfer_to_support", NOT_ALLOWED)],
    ids=["same-target-twice", "target-the-new-agent-may-not-reach"],
)
async def test_a_transfer_of_a_step_that_already_handed_off_is_checked_against_the_new_agent(
    fake: FakeOpenAI, person: httpx.AsyncClient, agent: str, second: str, refusal: str
) -> None:
    mark = marker()
    fake.script(
        {
            "match": mark,
            "tool_calls": [
                {"name": "transfer_to_billing", "id": "call_first"},
                {"name": second, "id": "call_second"},
            ],
        },
        {"match": mark, "text": "Billing here."},
    )
    thread_id = await create_thread(person, agent)
    threads = Threads(person)
    reply_id, events = await converse(person, threads, thread_id, f"{mark} money")

    assert (events[-1].json["id"], events[-1].json["status"]) == (reply_id, "complete")
    thread = await threads.get(thread_id)
    assert thread["agent"] == "billing"
    assert [(c["name"], c["status"], c["error"]) for c in thread["toolCalls"]] == [
        ("transfer_to_billing", "done", None),
        (second, "failed", refusal),
    ]
    assert [m["text"] for m in thread["messages"] if m["role"] == "system"] == [
        "Transferred to billing"
    ]
    last = chat_bodies(fake, mark)[-1]
    assert (last["model"], last["messages"][-2]) == (
        "billing-model",
        tool_result("call_second", f"Error: {refusal}"),
    )


VOICE_PRICES = """
[prices."gpt-4o-mini"]
input_per_mtok = 2.0
output_per_mtok = 8.0

[prices."gpt-4o-mini-transcribe"]
audio_in_per_min = 0.5

[prices."gpt-4o-mini-tts"]
speech_per_mchar = 30.0
"""


@requires_espeak
async def test_a_spoken_reply_cut_by_a_barge_in_is_priced_like_a_typed_cancel(
    fake: FakeOpenAI, start_agent_server: StartAgentServer, tmp_path: Path
) -> None:
    config = tmp_path / "voice-prices.toml"
    config.write_text(VOICE_PRICES)
    server = start_agent_server(fake.api_base, "--config", str(config))
    story = " ".join(f"This is sentence {i} of the story." for i in range(12))
    barge = script_barge_in(fake, tmp_path, story)
    async with server.client() as client:
        threads = Threads(client)
        thread_id = await threads.create()
        async with conversation(server, thread_id) as talk:
            reply_id = await interrupt_at(talk, barge, 2)
        thread = await threads.get(thread_id)

    cut = thread["messages"][1]
    heard = thread["messages"][0]["usage"]["audioInSeconds"]
    spoken = cut["usage"]["speechChars"]
    assert (cut["id"], cut["status"], cut["error"]["code"]) == (reply_id, "interrupted", "barge_in")
    # Its only step was cut before its usage came: counted; the audio heard and spoken priced.
    assert (cut["usage"]["promptTokens"], cut["usage"]["unreportedSteps"]) == (0, 1)
    assert heard > 0
    assert spoken > 0
    assert cut["usage"]["costUsd"] == round(heard / 60 * 0.5 + spoken / 1e6 * 30.0, 10)
    assert thread["usage"]["unreportedSteps"] == 1
    assert thread["usage"]["costUsd"] is not None
