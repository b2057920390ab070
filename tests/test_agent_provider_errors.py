"""Model provider failures end to end: the reply fails with an exact error and keeps its text.

Each failure comes after a good exchange in the same thread, which must stay untouched, and the
server must go on serving. The tests share a server wired to the FakeOpenAI with
`--provider-timeout-s 1`; a provider that refuses connections gets a server of its own, and no
provider at all the server without one that other modules share.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.support.agent import (
    StartAgentServer,
    Threads,
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

pytestmark = [pytest.mark.anyio, pytest.mark.agent_server("--provider-timeout-s", "1")]

WORDS = "One two three four five six seven eight nine ten"


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


@pytest.mark.parametrize(
    ("plans", "code", "message", "text", "requests"),
    [
        pytest.param(
            [{"hang_s": 5, "times": 3}],
            "provider_timeout",
            "The model provider at {api_base} did not answer within 1 s after 2 retries.",
            "",
            3,
            id="does-not-answer",
        ),
        pytest.param(
            # One word, then two seconds of silence: more than --provider-timeout-s.
            [{"text": WORDS, "tokens_per_second": 0.5}],
            "provider_timeout",
            "The model provider at {api_base} went silent mid-reply for 1 s.",
            "One ",
            1,
            id="silent-mid-reply-keeps-the-text",
        ),
        pytest.param(
            [{"error": {"status": 401}}],
            "provider_auth_failed",
            "The model provider rejected the API key (HTTP 401: Incorrect API key provided. You"
            " can find your API key at https://platform.openai.com). Check OPENAI_API_KEY.",
            "",
            1,
            id="rejected-api-key-not-retried",
        ),
        pytest.param(
            [{"error": {"status": 500, "retry_after": 0}, "times": 3}],
            "provider_error",
            "The model provider failed (HTTP 500: The server had an error while processing your"
            " request. Sorry about that!) after 2 retries.",
            "",
            3,
            id="server-error-retried",
        ),
    ],
)
async def test_a_provider_failure_fails_the_reply(
    fake: FakeOpenAI,
    client: httpx.AsyncClient,
    server: ServerProcess,
    plans: list[dict[str, Any]],
    code: str,
    message: str,
    text: str,
    requests: int,
) -> None:
    failure = await reply_after_a_good_one(fake, client, plans)

    assert failure.error() == (
        "failed",
        {"code": code, "message": message.format(api_base=fake.api_base)},
        text,
    )
    assert len(failure.requests) == requests
    logged = (
        f"WARNING voicestack.agent.reply: reply failed: thread {failure.row['threadId']},"
        f" message {failure.row['id']}: {code}: {message.format(api_base=fake.api_base)}\n"
    )
    assert logged in server.log()


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


@pytest.mark.parametrize(
    ("plan", "code", "text", "message_start"),
    [
        pytest.param(
            # The role chunk, then three words, then the connection drops.
            {"text": WORDS, "cut_after_chunks": 4},
            "provider_stream_broken",
            "One two three ",
            "The model provider's stream was cut off mid-reply (",
            id="cut-mid-reply",
        ),
        pytest.param(
            # The role chunk, then three words, then the body ends: no finish_reason, no [DONE].
            {"text": WORDS, "end_after_chunks": 4},
            "provider_stream_broken",
            "One two three ",
            "The model provider's stream was cut off mid-reply (the stream ended with neither"
            " [DONE] nor a finish_reason).",
            id="ended-mid-reply",
        ),
        pytest.param(
            # The role chunk, then two words, then a truncated JSON object.
            {"text": WORDS, "malformed_after_chunks": 3},
            "provider_bad_response",
            "One two ",
            "The model provider sent a stream chunk that is not valid JSON (",
            id="malformed-chunk",
        ),
    ],
)
async def test_a_broken_stream_fails_the_reply_and_keeps_the_text(
    fake: FakeOpenAI,
    client: httpx.AsyncClient,
    plan: dict[str, Any],
    code: str,
    text: str,
    message_start: str,
) -> None:
    failure = await reply_after_a_good_one(fake, client, [plan])

    status, error, kept = failure.error()
    assert (status, error["code"], kept) == ("failed", code, text)
    assert error["message"].startswith(message_start)
    assert len(failure.requests) == 1  # what streamed is kept, so no retry repeats it


async def test_a_provider_that_refuses_connections_is_unreachable(
    fake: FakeOpenAI, start_agent_server: StartAgentServer
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    server = start_agent_server(closed)
    async with server.client() as client:
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


async def test_without_a_provider_a_reply_fails_at_once(
    fake: FakeOpenAI, shared_agent_server: StartAgentServer
) -> None:
    async with shared_agent_server(None).client() as client:
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


class NotFound(BaseHTTPRequestHandler):
    """A server that is not an OpenAI-compatible one: 404 to everything, with the body
    `server.body` (empty, or a web framework's own error shape)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body: bytes = self.server.body  # type: ignore[attr-defined]
        self.send_response(404)
        self.send_header("content-type", "application/json" if body else "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("body", "explained"),
    [
        (b"", "HTTP 404, with no explanation"),
        (b'{"detail": "Not Found"}', "HTTP 404: Not Found"),
        (
            b'{"error": "model \\"llama9\\" not found, try pulling it first"}',
            'HTTP 404: model "llama9" not found, try pulling it first',
        ),
    ],
    ids=["empty", "detail", "error-string"],
)
async def test_a_404_says_what_the_provider_said_once(
    fake: FakeOpenAI, start_agent_server: StartAgentServer, body: bytes, explained: str
) -> None:
    stand_in = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    stand_in.body = body  # type: ignore[attr-defined]
    threading.Thread(target=stand_in.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{stand_in.server_port}/v1"
        server = start_agent_server(base, "--model", "llama9")
        async with server.client() as client:
            failure = await reply_after_a_good_one(fake, client, [], good=False)
    finally:
        stand_in.shutdown()
        stand_in.server_close()

    assert failure.error() == (
        "failed",
        {
            "code": "provider_bad_request",
            "message": f"The model provider rejected the request ({explained}). Check the model"
            " name 'llama9' and the base URL.",
        },
        "",
    )
