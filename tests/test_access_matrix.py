"""Who may call what: every route of the public contract × every kind of caller, on one server.

The callers are: no token, a well-formed unknown token, a revoked token (of the thread's
member), another user, the thread's member, its owner, and an admin. Each route names what a
caller who is let through gets (status and error code, when the route answers one even then);
everyone else gets 401 (no or bad token) or the route's "not found" (a user outside the thread).
A cell is an unexpected grant when a caller who should be refused gets a success (2xx/3xx); the
module counts them over the whole matrix, prints the count with the matrix size, and asserts there
are none. Every cell must also match its expected status and error code exactly.
"""

from __future__ import annotations

import io
import json
import secrets
import time
import wave
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.access_routes import CALLERS, ROUTES, SSE, Answer, Route
from tests.support.agent import running_agent_server
from tests.support.cli import invoke
from tests.support.server import ServerProcess
from voicestack.testing.fake_openai import FakeOpenAI


@dataclass
class World:
    """The shared server and what the matrix works on: one thread, its file and tool call."""

    server: ServerProcess
    tokens: dict[str, str]
    thread_id: str
    file_id: str
    call_id: str

    def headers(self, caller: str) -> dict[str, str]:
        """The Authorization header `caller` sends (none for `none`)."""
        token = self.tokens.get(caller)
        return {"Authorization": f"Bearer {token}"} if token else {}


def tiny_wav() -> bytes:
    """A tenth of a second of silence, 16-bit mono WAV."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\0\0" * 800)
    return out.getvalue()


def _fill(value: Any, world: World) -> Any:
    if isinstance(value, str):
        return (
            value.replace("{thread}", world.thread_id)
            .replace("{file}", world.file_id)
            .replace("{call}", world.call_id)
        )
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, world) for v in value]
    return value


@dataclass
class Cell:
    """What one caller got from one route."""

    route: str
    caller: str
    expected: Answer
    got: Answer
    body: bytes = field(repr=False)


def _code(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def call(http: httpx.Client, world: World, route: Route, caller: str) -> Cell:
    """Make `route`'s request as `caller`; a granted stream is opened, its first bytes read,
    then closed."""
    path = _fill(route.path, world)
    params = _fill(route.params, world)
    headers = world.headers(caller)
    if route.query_token:
        params = {**(params or {}), **({"token": world.tokens[caller]} if headers else {})}
        headers = {}
    kwargs: dict[str, Any] = {"headers": headers, "params": params}
    if route.voice:
        kwargs["files"] = {"audio": ("recording.wav", tiny_wav(), "audio/wav")}
        kwargs["data"] = {"threadId": world.thread_id}
    elif route.json is not None:
        kwargs["json"] = _fill(route.json, world)
    with http.stream(route.method, path, **kwargs) as response:
        if response.headers.get("content-type") == SSE:
            body = next(response.iter_raw())  # the first event: the stream is live
            got: Answer = (response.status_code, None)
        else:
            body = response.read()
            got = (response.status_code, _code(body) if response.status_code >= 400 else None)
            if route.stream and response.status_code == 200:
                got = (response.status_code, "not_a_stream")
    return Cell(route.name, caller, route.expected(caller), got, body)


def _wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[World]:
    """One agent server (replies and transcripts from the fake), its users, and a thread owned
    by `owner` with `member` invited, holding a recording and a finished tool call."""
    workdir = tmp_path_factory.mktemp("matrix")
    with running_agent_server(workdir, fake_openai.api_base) as server:
        assert server.token
        tokens = {"admin": server.token, "bad": "vs_" + "A" * 43}
        for user in ("owner", "member", "other", "guest", "stranger"):
            tokens[user] = server.create_token(user)
        tokens["revoked"] = server.create_token("member")
        revoked = invoke(["token", "revoke", tokens["revoked"], "--db", str(server.db_path)])
        assert revoked.exit_code == 0, revoked.stderr
        for unused in ("guest", "stranger"):
            del tokens[unused]
        with httpx.Client(base_url=server.url, timeout=10.0) as http:
            owner = {"Authorization": f"Bearer {tokens['owner']}"}
            thread_id = http.post("/api/threads", json={"title": "t"}, headers=owner).json()["id"]
            invited = http.post(
                "/api/mutation/threads.invite",
                json={"args": {"id": thread_id, "user": "member"}},
                headers=owner,
            )
            assert invited.status_code == 200, invited.text
            mark = f"m{secrets.token_hex(5)}"
            fake_openai.script(
                {"match": mark, "tool_calls": [{"name": "explode", "arguments": {}, "id": "c1"}]},
                {"match": mark, "text": "done"},
            )
            sent = http.post(
                f"/api/threads/{thread_id}/messages", json={"text": mark}, headers=owner
            )
            assert sent.status_code == 201, sent.text
            voice = http.post(
                "/voice",
                files={"audio": ("recording.wav", tiny_wav(), "audio/wav")},
                data={"threadId": thread_id},
                headers=owner,
            )
            assert voice.status_code == 201, voice.text

            def finished_call() -> str | None:
                rows = http.post(
                    "/api/query/tool_calls.list",
                    json={"args": {"threadId": thread_id}},
                    headers=owner,
                ).json()["value"]
                return rows[0]["id"] if rows and rows[0]["status"] == "failed" else None

            call_id = _wait_for(finished_call)
        yield World(server, tokens, thread_id, voice.json()["fileId"], call_id)


@pytest.fixture(scope="module")
def tally() -> Iterator[Counter[str]]:
    """Counts cells over the module; at the end prints the matrix size and asserts that no
    caller was let through where it should have been refused."""
    counts: Counter[str] = Counter()
    yield counts
    print(
        f"\naccess matrix: {len(ROUTES)} routes x {len(CALLERS)} callers = {counts['cells']}"
        f" cells; unexpected grants: {counts['unexpected_grants']};"
        f" cells not as expected: {counts['mismatches']}"
    )
    assert counts["unexpected_grants"] == 0


@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
def test_each_caller_gets_what_the_route_grants_it(
    world: World, tally: Counter[str], route: Route
) -> None:
    with httpx.Client(base_url=world.server.url, timeout=10.0) as http:
        cells = [call(http, world, route, caller) for caller in CALLERS]
    tally["cells"] += len(cells)
    unexpected = [c.caller for c in cells if route.refuses(c.caller) and c.got[0] < 400]
    tally["unexpected_grants"] += len(unexpected)
    wrong = [(c.caller, c.expected, c.got) for c in cells if c.got != c.expected]
    tally["mismatches"] += len(wrong)
    assert unexpected == [], f"{route.name} lets these callers through"
    assert wrong == [], route.name
    leaked = [c.caller for c in cells for t in world.tokens.values() if t.encode() in c.body]
    assert leaked == [], f"a token appears in a response body of {route.name}"


def test_a_query_token_opens_only_event_streams(world: World) -> None:
    member = world.tokens["member"]
    with httpx.Client(base_url=world.server.url, timeout=10.0) as http:
        for path in ("/api/threads", f"/api/threads/{world.thread_id}", "/api/functions"):
            refused = http.get(path, params={"token": member})
            assert (refused.status_code, _code(refused.content)) == (401, "unauthorized")
            assert member.encode() not in refused.content
        posted = http.post("/api/query/threads.list", params={"token": member}, json={"args": {}})
        assert (posted.status_code, _code(posted.content)) == (401, "unauthorized")
        events = f"/api/threads/{world.thread_id}/events"
        with http.stream("GET", events, params={"token": member}) as stream:
            assert (stream.status_code, stream.headers["content-type"]) == (200, SSE)
        outsider = world.tokens["other"]
        with http.stream("GET", events, params={"token": outsider}) as stream:
            assert (stream.status_code, _code(stream.read())) == (404, "thread_not_found")
