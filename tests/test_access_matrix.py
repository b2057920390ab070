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

from tests.support.agent import running_agent_server
from tests.support.cli import invoke
from tests.support.server import ServerProcess
from voicestack.testing.fake_openai import FakeOpenAI

CALLERS = ("none", "bad", "revoked", "other", "member", "owner", "admin")
SSE = "text/event-stream; charset=utf-8"
# (status, error code or None): what a caller gets.
Answer = tuple[int, str | None]
UNAUTHORIZED: dict[str, Answer] = {
    "none": (401, "unauthorized"),
    "bad": (401, "invalid_token"),
    "revoked": (401, "invalid_token"),
}


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


@dataclass(frozen=True)
class Route:
    """One request of the matrix and what each caller who is let through gets."""

    name: str
    method: str
    path: str  # `{thread}`, `{file}` and `{call}` are filled in
    granted: Answer | dict[str, Answer]
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    voice: bool = False
    stream: bool = False
    query_token: bool = False  # the token goes in `?token=`, as EventSource sends it
    outsider: Answer | None = (404, "thread_not_found")  # None: outsiders are let through too

    def expected(self, caller: str) -> Answer:
        """What `caller` must get."""
        if caller in UNAUTHORIZED:
            return UNAUTHORIZED[caller]
        if caller == "other" and self.outsider is not None:
            return self.outsider
        if isinstance(self.granted, dict):
            return self.granted[caller]
        return self.granted

    def refuses(self, caller: str) -> bool:
        """True when `caller` must not be let through."""
        return caller in UNAUTHORIZED or (caller == "other" and self.outsider is not None)


def _watch(args: dict[str, Any]) -> dict[str, str]:
    return {"args": json.dumps(args)}


OK, CREATED = (200, None), (201, None)
T = {"id": "{thread}"}
IN_T = {"threadId": "{thread}"}
EVERYONE: dict[str, Any] = {"outsider": None}

ROUTES = [
    Route("functions", "GET", "/api/functions", OK, **EVERYONE),
    Route("tools", "GET", "/api/tools", OK, **EVERYONE),
    Route("threads list", "GET", "/api/threads", OK, **EVERYONE),
    Route("threads create", "POST", "/api/threads", CREATED, json={"title": "m"}, **EVERYONE),
    Route("thread get", "GET", "/api/threads/{thread}", OK),
    Route("thread send", "POST", "/api/threads/{thread}/messages", CREATED, json={"text": "hello"}),
    Route("thread cancel", "POST", "/api/threads/{thread}/cancel", OK),
    Route("thread events", "GET", "/api/threads/{thread}/events", OK, stream=True),
    Route(
        "thread events ?token=",
        "GET",
        "/api/threads/{thread}/events",
        OK,
        stream=True,
        query_token=True,
    ),
    Route("voice", "POST", "/voice", CREATED, voice=True),
    Route("file", "GET", "/api/files/{file}", OK, outsider=(404, "file_not_found")),
    Route(
        "watch threads.get",
        "GET",
        "/api/watch/threads.get",
        OK,
        params=_watch(T),
        stream=True,
    ),
    Route(
        "watch threads.get ?token=",
        "GET",
        "/api/watch/threads.get",
        OK,
        params=_watch(T),
        stream=True,
        query_token=True,
    ),
    Route(
        "watch messages.list",
        "GET",
        "/api/watch/messages.list",
        OK,
        params=_watch(IN_T),
        stream=True,
    ),
    Route(
        "watch tool_calls.list",
        "GET",
        "/api/watch/tool_calls.list",
        OK,
        params=_watch(IN_T),
        stream=True,
    ),
    Route(
        "watch threads.list",
        "GET",
        "/api/watch/threads.list",
        OK,
        stream=True,
        **EVERYONE,
    ),
    Route(
        "watch many",
        "GET",
        "/api/watch",
        OK,
        params={
            "q": json.dumps(
                [
                    {"id": "list", "name": "threads.list", "args": {}},
                    {"id": "one", "name": "threads.get", "args": T},
                    {"id": "msgs", "name": "messages.list", "args": IN_T},
                ]
            )
        },
        stream=True,
    ),
    Route("query threads.list", "POST", "/api/query/threads.list", OK, json={}, **EVERYONE),
    Route("query threads.get", "POST", "/api/query/threads.get", OK, json={"args": T}),
    Route("query messages.list", "POST", "/api/query/messages.list", OK, json={"args": IN_T}),
    Route("query tool_calls.list", "POST", "/api/query/tool_calls.list", OK, json={"args": IN_T}),
    Route(
        "query memory.search in a thread",
        "POST",
        "/api/query/memory.search",
        OK,
        json={"args": {"query": "hello", **IN_T}},
    ),
    Route(
        "query memory.search everywhere",
        "POST",
        "/api/query/memory.search",
        OK,
        json={"args": {"query": "hello"}},
        **EVERYONE,
    ),
    Route("query scheduler.jobs", "POST", "/api/query/scheduler.jobs", OK, json={}, **EVERYONE),
    Route(
        "mutation threads.create",
        "POST",
        "/api/mutation/threads.create",
        OK,
        json={"args": {"title": "m"}},
        **EVERYONE,
    ),
    Route(
        "mutation messages.send",
        "POST",
        "/api/mutation/messages.send",
        OK,
        json={"args": {**IN_T, "text": "hi"}},
    ),
    Route(
        "mutation messages.cancel", "POST", "/api/mutation/messages.cancel", OK, json={"args": IN_T}
    ),
    Route(
        "mutation messages.post",
        "POST",
        "/api/mutation/messages.post",
        {"member": (403, "forbidden"), "owner": (403, "forbidden"), "admin": OK},
        json={"args": {**IN_T, "text": "a person answers"}},
    ),
    # The call has finished: one who may see the thread learns that, anyone else "not found".
    Route(
        "mutation tool_calls.approve",
        "POST",
        "/api/mutation/tool_calls.approve",
        (409, "not_awaiting_approval"),
        json={"args": {"id": "{call}"}},
        outsider=(404, "tool_call_not_found"),
    ),
    Route(
        "mutation tool_calls.deny",
        "POST",
        "/api/mutation/tool_calls.deny",
        (409, "not_awaiting_approval"),
        json={"args": {"id": "{call}"}},
        outsider=(404, "tool_call_not_found"),
    ),
    Route(
        "mutation threads.invite",
        "POST",
        "/api/mutation/threads.invite",
        {"member": (403, "forbidden"), "owner": OK, "admin": OK},
        json={"args": {**T, "user": "guest"}},
    ),
    Route(
        "mutation threads.leave (remove another)",
        "POST",
        "/api/mutation/threads.leave",
        {
            "member": (403, "forbidden"),
            "owner": (404, "member_not_found"),
            "admin": (404, "member_not_found"),
        },
        json={"args": {**T, "user": "stranger"}},
    ),
    Route(
        "action (the test app's)",
        "POST",
        "/api/action/items.add_and_count",
        OK,
        json={"args": {"name": "matrix"}},
        **EVERYONE,
    ),
    Route(
        "action of a query's name",
        "POST",
        "/api/action/threads.get",
        (400, "wrong_function_kind"),
        json={"args": T},
        **EVERYONE,
    ),
]


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
