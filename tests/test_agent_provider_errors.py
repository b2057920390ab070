"""Model provider failures end to end: the reply fails with an exact error and keeps its text.

Each failure comes after a good exchange in the same thread, which must stay untouched, and the
server must go on serving. One FakeOpenAI and one server (`--provider-timeout-s 1`) serve the
module; a provider that refuses connections, and no provider at all, get servers of their own.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agent import (
    Threads,
    agent_args,
    agent_server,
    chat_bodies,
    ended,
    feed,
    marker,
    read_until,
    snapshot,
    streamed,
)
from tests.support.server import ServerProcess, free_port
from tests.support.sse import Event
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

WORDS = "One two three four five six seven eight nine ten"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake: FakeOpenAI) -> None:
    fake.reset()


@pytest.fixture(scope="module")
def server(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = agent_args(fake.api_base, "--provider-timeout-s", "1")
    with agent_server(tmp_path_factory.mktemp("provider"), args) as server:
        yield server


@pytest.fixture
def threads(client: httpx.AsyncClient) -> Threads:
    return Threads(client)


@dataclass
class Failure:
    """How a reply ended after the provider failed."""

    row: dict[str, Any]
    events: list[Event]
    requests: list[dict[str, Any]]
    seconds: float

    def error(self) -> tuple[str, dict[str, str], str]:
        """(status, error, text) of the reply."""
        return self.row["status"], self.row["error"], self.row["text"]


async def reply_after_a_good_one(
    fake: FakeOpenAI,
    client: httpx.AsyncClient,
    plans: list[dict[str, Any]],
    *,
    good: bool = True,
) -> Failure:
    """In a new thread: one good exchange (unless `good` is False), then one whose plans are
    `plans`; checks that the good exchange is untouched and that the server still serves."""
    threads = Threads(client)
    mark = marker()
    thread_id = await threads.create()
    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        if good:
            fake.script({"match": f"{mark} good", "text": "All good."})
            _, good_reply = await threads.send(thread_id, f"{mark} good")
            await read_until(stream, ended(good_reply))
        before = (await threads.get(thread_id))["messages"]
        fake.script(*[{"match": f"{mark} bad", **plan} for plan in plans])
        sent = time.monotonic()
        user_id, reply_id = await threads.send(thread_id, f"{mark} bad")
        events = await read_until(stream, ended(reply_id), timeout=15.0)
        seconds = time.monotonic() - sent

    after = (await threads.get(thread_id))["messages"]
    assert after[: len(before)] == before
    assert [m["id"] for m in after[len(before) :]] == [user_id, reply_id]
    assert after[-1] == events[-1].json
    assert events[-1].json["text"] == streamed(events, reply_id)
    health = await client.get("/healthz")
    assert (health.status_code, health.json()["ok"]) == (200, True)
    return Failure(events[-1].json, events, chat_bodies(fake, f"{mark} bad"), seconds)


async def test_a_provider_that_does_not_answer_times_out(
    fake: FakeOpenAI, client: httpx.AsyncClient
) -> None:
    failure = await reply_after_a_good_one(fake, client, [{"hang_s": 5, "times": 3}])

    assert failure.error() == (
        "failed",
        {
            "code": "provider_timeout",
            "message": f"The model provider at {fake.api_base} did not answer within 1 s"
            " after 2 retries.",
        },
        "",
    )
    assert len(failure.requests) == 3


async def test_a_provider_that_goes_silent_mid_reply_times_out_and_keeps_the_text(
    fake: FakeOpenAI, client: httpx.AsyncClient
) -> None:
    # One word, then two seconds of silence: more than --provider-timeout-s.
    failure = await reply_after_a_good_one(
        fake, client, [{"text": WORDS, "tokens_per_second": 0.5}]
    )

    assert failure.error() == (
        "failed",
        {
            "code": "provider_timeout",
            "message": f"The model provider at {fake.api_base} went silent mid-reply for 1 s.",
        },
        "One ",
    )
    assert len(failure.requests) == 1


async def test_a_rejected_api_key_fails_without_retrying(
    fake: FakeOpenAI, client: httpx.AsyncClient
) -> None:
    failure = await reply_after_a_good_one(fake, client, [{"error": {"status": 401}}])

    assert failure.error() == (
        "failed",
        {
            "code": "provider_auth_failed",
            "message": "The model provider rejected the API key (HTTP 401: Incorrect API key"
            " provided. You can find your API key at https://platform.openai.com). Check"
            " OPENAI_API_KEY.",
        },
        "",
    )
    assert len(failure.requests) == 1


async def test_rate_limiting_is_retried_after_retry_after_then_fails(
    fake: FakeOpenAI, client: httpx.AsyncClient
) -> None:
    failure = await reply_after_a_good_one(
        fake, client, [{"error": {"status": 429, "retry_after": 0.2}, "times": 3}]
    )

    assert failure.error() == (
        "failed",
        {
            "code": "provider_rate_limited",
            "message": "The model provider is rate limiting requests (HTTP 429: Rate limit"
            " reached for requests. Please try again later) after 2 retries. Wait a moment and"
            " try again.",
        },
        "",
    )
    assert len(failure.requests) == 3
    # Each retry waited the 0.2 s the provider asked for.
    stamps = [r["timestamp"] for r in fake.requests("chat")][-3:]
    assert [gap >= 0.2 for gap in (b - a for a, b in itertools.pairwise(stamps))] == [True, True]


async def test_rate_limiting_once_is_retried_and_the_reply_completes(
    fake: FakeOpenAI, client: httpx.AsyncClient
) -> None:
    failure = await reply_after_a_good_one(
        fake,
        client,
        [{"error": {"status": 429, "retry_after": 0.2}}, {"text": "Made it."}],
    )

    assert failure.error() == ("complete", None, "Made it.")
    assert len(failure.requests) == 2


async def test_a_server_error_is_retried_then_fails(
    fake: FakeOpenAI, client: httpx.AsyncClient
) -> None:
    failure = await reply_after_a_good_one(
        fake, client, [{"error": {"status": 500, "retry_after": 0}, "times": 3}]
    )

    assert failure.error() == (
        "failed",
        {
            "code": "provider_error",
            "message": "The model provider failed (HTTP 500: The server had an error while"
            " processing your request. Sorry about that!) after 2 retries.",
        },
        "",
    )
    assert len(failure.requests) == 3


async def test_a_stream_cut_mid_reply_fails_and_keeps_the_text(
    fake: FakeOpenAI, client: httpx.AsyncClient
) -> None:
    # The role chunk, then three words, then the connection drops.
    failure = await reply_after_a_good_one(fake, client, [{"text": WORDS, "cut_after_chunks": 4}])

    status, error, text = failure.error()
    assert (status, error["code"], text) == (
        "failed",
        "provider_stream_broken",
        "One two three ",
    )
    assert error["message"].startswith("The model provider's stream was cut off mid-reply (")
    assert len(failure.requests) == 1  # what streamed is kept, so no retry repeats it


async def test_a_malformed_chunk_fails_the_reply_and_keeps_the_text(
    fake: FakeOpenAI, client: httpx.AsyncClient
) -> None:
    # The role chunk, then two words, then a truncated JSON object.
    failure = await reply_after_a_good_one(
        fake, client, [{"text": WORDS, "malformed_after_chunks": 3}]
    )

    status, error, text = failure.error()
    assert (status, error["code"], text) == ("failed", "provider_bad_response", "One two ")
    assert error["message"].startswith(
        "The model provider sent a stream chunk that is not valid JSON ("
    )
    assert len(failure.requests) == 1


async def test_a_provider_that_refuses_connections_is_unreachable(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    with agent_server(tmp_path, agent_args(closed)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
            failure = await reply_after_a_good_one(fake, client, [], good=False)

    assert failure.error() == (
        "failed",
        {
            "code": "provider_unreachable",
            "message": f"Could not connect to the model provider at {closed} after 2 retries"
            " (Connection refused). Check that it is running and that the base URL is right.",
        },
        "",
    )


async def test_without_a_provider_a_reply_fails_at_once(fake: FakeOpenAI, tmp_path: Path) -> None:
    with agent_server(tmp_path, agent_args(None)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
            failure = await reply_after_a_good_one(fake, client, [], good=False)

    assert failure.error() == (
        "failed",
        {
            "code": "provider_not_configured",
            "message": "No model provider is configured: set OPENAI_API_KEY, or"
            " --openai-base-url for an OpenAI-compatible server.",
        },
        "",
    )
    assert failure.seconds < 1.0
    assert failure.requests == []
