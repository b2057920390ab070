"""The fast lane (voicestack/http/fast_lane.py) answers every request it takes exactly as the
middleware stack and the routes would: status, headers and body, errors and refusals included,
and its rate limits are the stack's own buckets.

Two servers of the test app serve the module with the same small limits: one with the lane, and
one with CORS on, which leaves the lane out, so that the stack answers everything there.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from starlette.middleware import Middleware

from tests.support.api import error_of
from tests.support.server import TEST_APP, ServerProcess, running_server
from voicestack.config import Settings
from voicestack.http import create_app
from voicestack.http.fast_lane import FastLane

pytestmark = pytest.mark.anyio

LIMITS = ["--rate-mutations-per-min", "5", "--rate-replies-per-min", "3"]
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def lane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("lane"), TEST_APP, LIMITS) as process:
        yield process


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    flags = [*LIMITS, "--cors-origin", ORIGIN]
    with running_server(tmp_path_factory.mktemp("stack"), TEST_APP, flags) as process:
        yield process


def test_the_lane_goes_first_and_only_without_cors() -> None:
    def layers(settings: Settings) -> list[type]:
        middleware: list[Middleware] = create_app(settings).user_middleware
        return [entry.cls for entry in middleware]  # type: ignore[misc]

    assert layers(Settings())[0] is FastLane
    assert FastLane not in layers(Settings(cors_origins=[ORIGIN]))


async def _new_thread(server: ServerProcess, token: str) -> str:
    async with server.client(token=token) as http:
        response = await http.post("/api/threads", json={"title": "lane"})
        assert response.status_code == 201, response.text
        thread_id: str = response.json()["id"]
        return thread_id


# What varies between two servers for the same request: ids, versions, dates; and the stack's
# server, with CORS on, says `Vary: Origin` on every answer.
_VARYING_KEYS = {"messageId", "replyId", "version", "id"}
_VARYING_HEADERS = {"date", "content-length", "vary"}


def _comparable(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: "…" if k in _VARYING_KEYS else scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    headers = {k: v for k, v in response.headers.items() if k not in _VARYING_HEADERS}
    body = scrub(response.json()) if response.content else None
    return response.status_code, headers, body


_callers = itertools.count()

# (path, body, headers); `{thread}` is a thread of the caller's.
CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("/api/threads/{thread}/messages", b'{"text": "hello"}', {}),
    ("/api/threads/{thread}/messages", b'{"text": 5}', {}),
    ("/api/threads/{thread}/messages", b'{"text": "hi", "extra": 1}', {}),
    ("/api/threads/{thread}/messages", b"[1]", {}),
    ("/api/threads/{thread}/messages", b'{"text": ', {}),
    ("/api/threads/{thread}/messages", b"", {}),
    ("/api/threads/nope/messages", b'{"text": "hello"}', {}),
    ("/api/mutation/items.add", b'{"args": {"name": "a"}}', {}),
    ("/api/mutation/items.add", b'{"args": {"name": 1}}', {}),
    ("/api/mutation/items.add", b'{"args": {"name": "a"}, "x": 1}', {}),
    ("/api/mutation/items.add", b'{"args": [1]}', {}),
    ("/api/mutation/items.add_then_fail", b'{"args": {"name": "b"}}', {}),
    ("/api/mutation/items.explode", b'{"args": {"name": "c"}}', {}),
    ("/api/mutation/items.list", b"{}", {}),
    ("/api/mutation/nope", b"{}", {}),
    ("/api/query/items.count", b"", {}),
    ("/api/query/items.get", b'{"args": {"id": 999}}', {}),
    ("/api/query/items.broken", b"{}", {}),
    ("/api/action/items.add_and_count", b'{"args": {"name": "d"}}', {}),
    ("/api/mutation/items.add", b'{"args": {"name": "e"}}', {"authorization": "Bearer vs_no"}),
    ("/api/mutation/items.add", b'{"args": {"name": "f"}}', {"authorization": "Basic eDp5"}),
    ("/api/mutation/items.add", b'{"args": {"name": "g"}}', {"authorization": ""}),
    ("/api/mutation/items.add", b'{"args": {"name": "h"}}', {"expect": "100-continue"}),
    ("/api/mutation/nope", b"{}", {"expect": "100-continue"}),
]


@pytest.mark.parametrize(
    ("path", "body", "headers"), CASES, ids=[c[0] + c[1].decode() for c in CASES]
)
async def test_the_lane_answers_as_the_stack_does(
    lane: ServerProcess, stack: ServerProcess, path: str, body: bytes, headers: dict[str, str]
) -> None:
    answers = []
    for server in (lane, stack):
        token = server.create_token(f"caller{next(_callers)}")
        thread_id = await _new_thread(server, token)
        async with server.client(token=token) as http:
            request = http.build_request(
                "POST",
                path.format(thread=thread_id),
                content=body,
                headers={"content-type": "application/json", **headers},
            )
            if headers.get("authorization") == "":
                del request.headers["authorization"]
            answers.append(_comparable(await http.send(request)))
    assert answers[0] == answers[1]


async def test_the_lane_and_the_stack_spend_the_same_rate_buckets(lane: ServerProcess) -> None:
    token = lane.create_token("spender")
    async with lane.client(token=token) as http:
        # POST /api/threads goes through the stack, items.add through the lane: five mutations.
        for _ in range(3):
            assert (await http.post("/api/threads", json={})).status_code == 201
        for name in ("a", "b"):
            added = await http.post("/api/mutation/items.add", json={"args": {"name": name}})
            assert added.status_code == 200, added.text
        refused = await http.post("/api/mutation/items.add", json={"args": {"name": "c"}})
        error_of(refused, 429, "rate_limited")
        assert refused.headers["retry-after"] == str(refused.json()["error"]["retryAfter"])
        assert refused.headers["x-content-type-options"] == "nosniff"
        error_of(await http.post("/api/threads", json={}), 429, "rate_limited")


def _raw_exchange(server: ServerProcess, head: str, body: bytes, pause_s: float = 0.0) -> bytes:
    """Send a request's head and body, the body `pause_s` later (0: in the same write), on a
    connection of its own; all the server answers until it closes."""
    host, port = server.url.removeprefix("http://").split(":")
    whole_head = head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        if pause_s:
            conn.sendall(whole_head)
            time.sleep(pause_s)
            conn.sendall(body)
        else:
            conn.sendall(whole_head + body)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        return answer


def _head(path: str, token: str, *extra: str) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Connection: close"]
    lines += [f"Authorization: Bearer {token}", "Content-Type: application/json", *extra]
    return "".join(line + "\r\n" for line in lines)


async def test_a_body_that_arrives_late_is_answered_by_the_stack(lane: ServerProcess) -> None:
    token = lane.create_token("slowsender")
    thread_id = await _new_thread(lane, token)
    head = _head(f"/api/threads/{thread_id}/messages", token)
    body = json.dumps({"text": "in two pieces"}).encode()
    # The head alone first: the body is not in hand when the request starts.
    answer = await anyio.to_thread.run_sync(_raw_exchange, lane, head, body, 0.3)
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:200]
    async with lane.client(token=token) as http:
        messages = (await http.get(f"/api/threads/{thread_id}")).json()["messages"]
    assert [m["text"] for m in messages if m["role"] == "user"] == ["in two pieces"]


async def test_a_refusal_before_the_body_sends_no_100_continue(lane: ServerProcess) -> None:
    # The stack refuses an unknown function before it reads the body, so a client waiting for
    # `100 Continue` never gets one; nor through the lane, which leaves such a request alone.
    head = _head("/api/mutation/nope", lane.create_token("hasty"), "Expect: 100-continue")
    answer = await anyio.to_thread.run_sync(_raw_exchange, lane, head, b"{}")
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
