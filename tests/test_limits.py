"""Limits: body and argument sizes, event streams per token, per-token rates (429 + Retry-After).

One server with small limits serves the module; each test spends the limits of tokens of its own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from tests.support.api import error_of
from tests.support.server import TEST_APP, ServerProcess, running_server
from tests.support.sse import watch
from voicestack.config import load_settings
from voicestack.http.limits import STREAM_RETRY_AFTER_S, RequestLimits, TokenBucket

pytestmark = pytest.mark.anyio

MiB = 1_048_576
ARGS_LIMIT = 2048
LIMITS = [
    *("--max-args-bytes", str(ARGS_LIMIT)),
    *("--max-streams-per-token", "2"),
    *("--rate-mutations-per-min", "5"),
    *("--rate-replies-per-min", "2"),
    *("--rate-voice-per-min", "1"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("limits"), TEST_APP, LIMITS) as process:
        yield process


@asynccontextmanager
async def user_client(server: ServerProcess, user: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a new token of `user` (whose limits no other test has spent)."""
    async with server.client(token=server.create_token(user)) as http:
        yield http


def retry_after(response: httpx.Response, code: str = "rate_limited") -> int:
    """The seconds of a 429, asserted equal in the header and the JSON error."""
    error = error_of(response, 429, code)
    seconds = int(response.headers["retry-after"])
    assert error["retryAfter"] == seconds, error
    return seconds


async def chunked(data: bytes, size: int = 65_536) -> AsyncIterator[bytes]:
    """`data` as a chunked body: no Content-Length, so only counting while reading can stop it."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


# -- sizes ---------------------------------------------------------------------------------------


async def test_a_chunked_body_over_the_limit_is_refused(server: ServerProcess) -> None:
    body = b'{"args": {"name": "%s"}}' % (b"x" * (MiB + 10))
    async with user_client(server, "chunky") as http:
        for path in ("/api/query/items.search", "/api/threads"):
            response = await http.post(path, content=chunked(body))
            assert "content-length" not in response.request.headers
            assert error_of(response, 413, "body_too_large") == {
                "code": "body_too_large",
                "message": f"The body is over the {MiB}-byte limit.",
            }
        assert (await http.get("/healthz")).status_code == 200


async def test_arguments_over_the_limit_are_refused(server: ServerProcess) -> None:
    big = "x" * ARGS_LIMIT
    async with user_client(server, "wordy") as http:
        response = await http.post("/api/query/items.search", json={"args": {"prefix": big}})
        assert error_of(response, 413, "args_too_large") == {
            "code": "args_too_large",
            "message": f"The arguments are over the {ARGS_LIMIT}-byte limit.",
        }
        args = json.dumps({"prefix": big})
        response = await http.get("/api/watch/items.search", params={"args": args})
        assert error_of(response, 413, "args_too_large") == {
            "code": "args_too_large",
            "message": f"The arguments in ?args= are over the {ARGS_LIMIT}-byte limit.",
        }
        q = json.dumps([{"id": "a", "name": "items.search", "args": {"prefix": big}}])
        response = await http.get("/api/watch", params={"q": q})
        assert error_of(response, 413, "args_too_large") == {
            "code": "args_too_large",
            "message": f"The subscriptions in ?q= are over the {ARGS_LIMIT}-byte limit.",
        }
        # Just under the limit is fine.
        small = {"args": {"prefix": "x" * (ARGS_LIMIT - 100)}}
        assert (await http.post("/api/query/items.search", json=small)).status_code == 200


# -- event streams per token -----------------------------------------------------------------------


async def test_streams_per_token_are_limited_and_freed_when_one_closes(
    server: ServerProcess,
) -> None:
    async with user_client(server, "watcher") as http, user_client(server, "other") as other:
        thread = (await http.post("/api/threads", json={})).json()["id"]
        async with watch(http, f"/api/threads/{thread}/events"):
            async with watch(http, "/api/watch/items.count") as first:
                await first.next()
                for path in ("/api/watch/items.count", f"/api/threads/{thread}/events"):
                    response = await http.get(path)
                    assert retry_after(response, "too_many_streams") == STREAM_RETRY_AFTER_S
                    assert response.json()["error"]["message"] == (
                        "This token already has 2 event streams open, the most it may:"
                        " close one first."
                    )
                # The limit is the token's: another token's streams are counted apart.
                async with watch(other, "/api/watch/items.count") as theirs:
                    await theirs.next()
            # One closed: its slot is free as soon as the server sees the client leave.
            with anyio.fail_after(5):
                while True:
                    async with http.stream("GET", "/api/watch/items.count") as probe:
                        if probe.status_code == 200:
                            break
                        await probe.aread()
                        retry_after(probe, "too_many_streams")
                    await anyio.sleep(0.05)


async def test_a_stream_refused_before_it_opens_takes_no_slot(server: ServerProcess) -> None:
    async with user_client(server, "misses") as http:
        for _ in range(5):
            response = await http.get("/api/watch/items.nope")
            assert response.status_code == 404
        async with watch(http, "/api/watch/items.count"), watch(http, "/api/watch/items.list"):
            pass


# -- rates -----------------------------------------------------------------------------------------


async def test_mutations_are_limited_per_token_with_retry_after(server: ServerProcess) -> None:
    async with user_client(server, "writer") as http, user_client(server, "reader") as other:
        for n in range(5):
            response = await http.post("/api/mutation/items.add", json={"args": {"name": f"{n}"}})
            assert response.status_code == 200, response.text
        response = await http.post("/api/mutation/items.add", json={"args": {"name": "six"}})
        seconds = retry_after(response)
        assert 1 <= seconds <= 12  # one mutation per 12 s refills the bucket
        assert response.json()["error"]["message"] == (
            f"Too many mutations with this token: at most 5 a minute. Try again in {seconds} s."
        )
        # Actions and the REST routes that write spend the same allowance.
        response = await http.post("/api/action/items.add_and_count", json={"args": {"name": "a"}})
        retry_after(response)
        retry_after(await http.post("/api/threads", json={}))
        # Reads are not limited, and the limit is this token's alone.
        for _ in range(10):
            assert (await http.post("/api/query/items.count")).status_code == 200
        response = await other.post("/api/mutation/items.add", json={"args": {"name": "x"}})
        assert response.status_code == 200


async def test_admins_are_limited_too(server: ServerProcess) -> None:
    async with server.client(token=server.create_token("boss", admin=True)) as http:
        codes = [(await http.post("/api/threads", json={})).status_code for _ in range(6)]
    assert codes == [201] * 5 + [429]


async def test_replies_by_either_route_and_voice_share_one_allowance(
    server: ServerProcess,
) -> None:
    async with user_client(server, "talker") as http:
        thread = (await http.post("/api/threads", json={})).json()["id"]
        # A recording starts a reply too: it spends a reply even when it is refused later.
        response = await http.post("/voice", json={"threadId": thread})
        error_of(response, 400, "empty_audio")
        response = await http.post("/voice", json={"threadId": thread})
        seconds = retry_after(response)
        assert response.json()["error"]["message"] == (
            "Too many voice requests with this token: at most 1 a minute."
            f" Try again in {seconds} s."
        )
        send = {"args": {"threadId": thread, "text": "hello"}}
        assert (await http.post("/api/mutation/messages.send", json=send)).status_code == 200
        response = await http.post(f"/api/threads/{thread}/messages", json={"text": "again"})
        seconds = retry_after(response)
        assert response.json()["error"]["message"] == (
            f"Too many replies with this token: at most 2 a minute. Try again in {seconds} s."
        )
        # What was refused spent nothing: other mutations still have their allowance.
        assert (await http.post("/api/threads", json={})).status_code == 201


def test_a_bucket_refills_evenly_and_keeps_at_most_a_minutes_worth() -> None:
    bucket = TokenBucket(capacity=60, level=60, updated=0.0)
    for _ in range(60):
        assert bucket.wait(0.0) == 0.0
        bucket.take()
    assert bucket.wait(0.0) == pytest.approx(1.0)
    assert bucket.wait(0.25) == pytest.approx(0.75)
    assert bucket.wait(1.0) == 0.0
    assert bucket.wait(3600.0) == 0.0
    assert bucket.level == 60


def test_a_limit_of_zero_is_switched_off(tmp_path: Path) -> None:
    config = tmp_path / "voicestack.toml"
    config.write_text("")
    settings = load_settings(
        config, rate_mutations_per_min=0, rate_replies_per_min=3, rate_voice_per_min=0
    )
    limits = RequestLimits(Starlette(), settings)
    assert limits.rates_of("POST", "/api/mutation/items.add") == ()
    assert [r.what for r in limits.rates_of("POST", "/api/threads/t1/messages")] == ["replies"]
    assert [r.what for r in limits.rates_of("POST", "/voice")] == ["replies"]
    assert limits.rates_of("GET", "/api/threads") == ()
