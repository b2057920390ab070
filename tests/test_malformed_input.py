"""Malformed input gets a 4xx in the error shape on every route, and no traceback in the log.

Each route that reads JSON is sent a value nested one level past MAX_JSON_DEPTH (and one at
it), a number of 5,000 digits, and a lone surrogate, as an escape and as raw UTF-8 bytes. The
routes that read numbers from a query, a header or a Range get 5,000 digits too; the ones that
quote input back in an error quote at most ECHO_CHARS of it; a URL past the HTTP parser's limit
is refused in JSON. `test_every_route_is_probed` keeps the tables in step with the app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from tests.support.agent import Threads
from tests.support.api import error_of
from tests.support.server import ServerProcess
from tests.support.sse import watch
from tests.support.voice import Recordings, post_form, requires_espeak
from voicestack.config import Settings
from voicestack.echo import ECHO_CHARS
from voicestack.http import create_app
from voicestack.http.json_checks import MAX_JSON_DEPTH
from voicestack.serve.parser_errors import MAX_URL_BYTES, URL_TOO_LONG
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, pytest.mark.agent_server()]

HUGE = "9" * 5000
LONG = "x" * 60_000  # fits a URL, and would fill a page if echoed whole
CUT = "x" * ECHO_CHARS + "…"


@contextmanager
def logged_cleanly(server: ServerProcess) -> Iterator[None]:
    """Assert that the server logs no traceback and no 500 while the block runs."""
    start = server.log_size()
    yield
    log = server.log(start)
    assert "Traceback" not in log, log
    assert "unhandled error" not in log, log


@dataclass(frozen=True)
class JsonInput:
    """Where a route reads JSON: `template` holds `%s` where the test's value goes, `depth`
    levels deep; `what` is how the route's invalid_json message names it."""

    method: str
    url: str
    where: str  # "body", or the query parameter
    template: str
    depth: int
    what: str

    def request(self, value: str | bytes) -> dict[str, Any]:
        """httpx.request arguments sending `value` (JSON text, or raw bytes in a body)."""
        raw = value if isinstance(value, bytes) else value.encode()
        text = self.template.encode() % raw
        if self.where == "body":
            headers = {"content-type": "application/json"}
            return {"method": self.method, "url": self.url, "content": text, "headers": headers}
        return {"method": self.method, "url": self.url, "params": {self.where: text.decode()}}


def json_inputs(thread_id: str) -> dict[tuple[str, str], JsonInput]:
    """Every route that reads JSON, keyed by the app's (method, path)."""
    q = '[{"id": "a", "name": "threads.list", "args": {"before": %s}}]'
    return {
        ("POST", "/api/query/{name}"): JsonInput(
            "POST", "/api/query/threads.list", "body", '{"args": {"before": %s}}', 2, "body"
        ),
        ("POST", "/api/mutation/{name}"): JsonInput(
            "POST", "/api/mutation/threads.create", "body", '{"args": {"title": %s}}', 2, "body"
        ),
        ("POST", "/api/action/{name}"): JsonInput(
            "POST", "/api/action/items.add_and_count", "body", '{"args": {"name": %s}}', 2, "body"
        ),
        ("POST", "/api/threads"): JsonInput(
            "POST", "/api/threads", "body", '{"title": %s}', 1, "body"
        ),
        ("POST", "/api/threads/{thread_id}/messages"): JsonInput(
            "POST", f"/api/threads/{thread_id}/messages", "body", '{"text": %s}', 1, "body"
        ),
        ("POST", "/voice"): JsonInput(
            "POST", "/voice", "body", '{"threadId": %s, "audioB64": "UklGRg=="}', 1, "body"
        ),
        ("GET", "/api/watch/{name}"): JsonInput(
            "GET", "/api/watch/threads.list", "args", '{"before": %s}', 1, "args"
        ),
        ("GET", "/api/watch"): JsonInput("GET", "/api/watch", "q", q, 3, "q"),
    }


def invalid_json(what: str, reason: str) -> dict[str, str]:
    """The exact invalid_json error for input named `what` ("body", or a query parameter)."""
    named = "The request body" if what == "body" else f"The {what} parameter"
    return {"code": "invalid_json", "message": f"{named} is not valid JSON: {reason}."}


# The rest of the routes, and what each is probed with below (test names).
OTHER_ROUTES = {
    ("GET", "/api/threads"): "numbers, echo, surrogate",
    ("GET", "/api/threads/{thread_id}"): "surrogate",
    ("POST", "/api/threads/{thread_id}/cancel"): "surrogate",
    ("GET", "/api/threads/{thread_id}/events"): "numbers, surrogate",
    ("GET", "/api/files/{file_id}"): "numbers (Range), echo, surrogate",
    ("GET", "/web/{file}"): "echo, surrogate",
    # No input but the URL, which the 414 test covers for all of them.
    ("GET", "/healthz"): "",
    ("GET", "/"): "",
    ("GET", "/openapi.json"): "",
    ("GET", "/api/functions"): "",
    ("GET", "/api/tools"): "",
    ("GET", "/api/agents"): "",
    # Signed by Twilio: anything unsigned is 403 (tests/test_twilio.py).
    ("POST", "/twilio/voice"): "",
    # Sign-in (tests/test_signin_*.py): browser navigations answering HTML pages, a cookie's
    # own routes, and the email form (on only with --smtp-url).
    ("GET", "/auth/login/{provider}"): "",
    ("GET", "/auth/callback/{provider}"): "",
    ("GET", "/auth/email/verify"): "",
    ("POST", "/auth/email"): "",
    ("POST", "/auth/logout"): "",
    ("GET", "/auth/providers"): "",
    ("GET", "/api/me"): "",
}


def test_every_route_is_probed() -> None:
    """Every HTTP route (the audio WebSocket's bad input is tested in test_realtime_refusals)."""
    routes = {
        (method, route.path)
        for route in create_app(Settings()).routes
        if isinstance(route, Route)
        for method in set(route.methods or ()) - {"HEAD"}
    }
    assert routes == set(json_inputs("x")) | set(OTHER_ROUTES)


async def send(client: httpx.AsyncClient, request: dict[str, Any]) -> httpx.Response:
    """The response to `request`; a stream answered 200 is closed unread."""
    async with client.stream(**request) as response:
        if response.status_code != 200:
            await response.aread()
        return response


@pytest.mark.parametrize("route", list(json_inputs("x")), ids="{0[0]} {0[1]}".format)
async def test_json_nested_past_the_limit_is_invalid_json(
    server: ServerProcess, client: httpx.AsyncClient, threads: Threads, route: tuple[str, str]
) -> None:
    target = json_inputs(await threads.create())[route]
    deep = MAX_JSON_DEPTH - target.depth + 1
    reason = f"it is nested over {MAX_JSON_DEPTH} arrays and objects deep"
    with logged_cleanly(server):
        for depth in (deep, 5000):
            refused = await send(client, target.request("[" * depth + "]" * depth))
            assert error_of(refused, 400, "invalid_json") == invalid_json(target.what, reason)
        # At the limit it is parsed; an array is the wrong type for each of these arguments.
        at_limit = await send(client, target.request("[" * (deep - 1) + "]" * (deep - 1)))
        error_of(at_limit, 422, "invalid_args")


@pytest.mark.parametrize("route", list(json_inputs("x")), ids="{0[0]} {0[1]}".format)
async def test_json_numbers_past_64_bits_are_invalid_json(
    server: ServerProcess, client: httpx.AsyncClient, threads: Threads, route: tuple[str, str]
) -> None:
    target = json_inputs(await threads.create())[route]
    with logged_cleanly(server):
        for number in (HUGE, "-" + HUGE, str(2**63)):
            refused = await send(client, target.request(number))
            reason = f"the number {number[:24]}{'…' if len(number) > 24 else ''} is outside "
            assert error_of(refused, 400, "invalid_json") == invalid_json(
                target.what, reason + "the 64-bit range"
            )


@pytest.mark.parametrize("route", list(json_inputs("x")), ids="{0[0]} {0[1]}".format)
async def test_a_lone_surrogate_is_invalid_json(
    server: ServerProcess, client: httpx.AsyncClient, threads: Threads, route: tuple[str, str]
) -> None:
    target = json_inputs(await threads.create())[route]
    lone = "a string holds a lone surrogate, not a character"
    with logged_cleanly(server):
        for text in ('"\\ud800"', '"a\\uDFFFb"', '"\\ud800\\ud800"', '{"\\udc00": 1}'):
            refused = await send(client, target.request(text))
            assert error_of(refused, 400, "invalid_json") == invalid_json(target.what, lone)
        if target.where == "body":  # as UTF-8 bytes, which no UTF-8 decoder takes
            refused = await send(client, target.request(b'"\xed\xa0\x80"'))
            assert error_of(refused, 400, "invalid_json")["message"].startswith(
                "The request body is not valid JSON: 'utf-8' codec can't decode byte 0xed"
            )


async def test_a_surrogate_pair_is_a_character(
    server: ServerProcess, client: httpx.AsyncClient
) -> None:
    with logged_cleanly(server):
        body = {"args": {"title": "\U0001f600"}}
        created = await client.post("/api/mutation/threads.create", json=body)
        assert created.status_code == 200, created.text
        thread_id = created.json()["value"]["id"]
        assert (await client.get(f"/api/threads/{thread_id}")).json()["title"] == "\U0001f600"


async def test_query_numbers_past_64_bits_are_invalid_args(
    server: ServerProcess, client: httpx.AsyncClient, threads: Threads
) -> None:
    thread_id = await threads.create()
    checks = [
        ("/api/threads", "limit"),
        (f"/api/threads/{thread_id}/events", "since"),
    ]
    with logged_cleanly(server):
        for path, name in checks:
            for number in (HUGE, "-" + HUGE, "0" + HUGE):
                refused = await send(
                    client, {"method": "GET", "url": path, "params": {name: number}}
                )
                assert error_of(refused, 422, "invalid_args") == {
                    "code": "invalid_args",
                    "message": f"{name} is outside the 64-bit range.",
                }


async def test_an_event_id_past_64_bits_is_ignored_and_the_stream_starts_afresh(
    server: ServerProcess, client: httpx.AsyncClient, threads: Threads
) -> None:
    thread_id = await threads.create()
    q = '[{"id": "a", "name": "threads.list", "args": {}}]'
    streams = [
        (f"/api/threads/{thread_id}/events", {}),
        ("/api/watch/threads.list", {}),
        ("/api/watch", {"q": q}),
    ]
    with logged_cleanly(server):
        for path, params in streams:
            resumes = [({"Last-Event-ID": HUGE}, {}), ({}, {"lastEventId": HUGE})]
            for headers, extra in resumes:
                async with watch(client, path, params={**params, **extra}, headers=headers):
                    pass  # 200: the unusable id is ignored, as one over 64 bits always was
        async with watch(client, "/api/watch/threads.list", headers={"Last-Event-ID": HUGE}) as w:
            assert (await w.next()).event == "value"  # a snapshot, not a resumption


async def test_input_quoted_in_an_error_is_cut(
    server: ServerProcess, client: httpx.AsyncClient
) -> None:
    expected = {
        ("GET", "/api/threads", LONG): f"No thread has id {CUT!r}.",
        ("GET", f"/api/files/{LONG}", None): f"No file has id {CUT!r}.",
        ("GET", f"/web/{LONG}", None): f"No file of the page is named {CUT!r}.",
        ("POST", f"/api/query/{LONG}", None): (
            f"No function is named {CUT!r}; GET /api/functions lists them."
        ),
        ("GET", f"/no/{LONG}", None): f"No route matches {('/no/' + LONG)[:ECHO_CHARS]}….",
    }
    with logged_cleanly(server):
        for (method, path, before), message in expected.items():
            params = {"before": before} if before else {}
            response = await client.request(method, path, params=params)
            assert response.status_code == 404, response.text
            assert response.json()["error"]["message"] == message
        args = f'{{"before": "{LONG}"}}'
        refused = await send(
            client, {"method": "GET", "url": "/api/watch/threads.list", "params": {"args": args}}
        )
        assert refused.json()["error"]["message"] == f"No thread has id {CUT!r}."
        too_long = await client.get(f"/api/threads/{LONG}")
        assert error_of(too_long, 422, "invalid_args")["fields"] == [
            {"field": "id", "message": "String should have at most 100 characters"}
        ]


# A lone surrogate, percent-encoded as UTF-8: URLs are decoded with replacement characters.
SURROGATE_IN_URL = "%ED%A0%80"
REPLACED = "\ufffd" * 3


async def test_a_surrogate_in_a_url_becomes_replacement_characters(
    server: ServerProcess, client: httpx.AsyncClient
) -> None:
    not_found = {
        ("GET", f"/api/threads?before={SURROGATE_IN_URL}"): f"No thread has id {REPLACED!r}.",
        ("GET", f"/api/threads/{SURROGATE_IN_URL}"): f"No thread has id {REPLACED!r}.",
        ("POST", f"/api/threads/{SURROGATE_IN_URL}/cancel"): f"No thread has id {REPLACED!r}.",
        ("GET", f"/api/threads/{SURROGATE_IN_URL}/events"): f"No thread has id {REPLACED!r}.",
        ("GET", f"/api/files/{SURROGATE_IN_URL}"): f"No file has id {REPLACED!r}.",
        ("GET", f"/web/{SURROGATE_IN_URL}"): f"No file of the page is named {REPLACED!r}.",
    }
    with logged_cleanly(server):
        for (method, url), message in not_found.items():
            response = await send(client, {"method": method, "url": url})
            assert response.status_code == 404, (url, response.text)
            assert response.json()["error"]["message"] == message, url


@requires_espeak
async def test_range_positions_of_thousands_of_digits(
    server: ServerProcess,
    fake: FakeOpenAI,
    client: httpx.AsyncClient,
    threads: Threads,
    recordings: Recordings,
) -> None:
    audio = recordings.audio("wav")
    fake.script({"kind": "transcription", "transcript": "hi"})
    uploaded = await post_form(client, await threads.create(), audio)
    url = f"/api/files/{uploaded.json()['fileId']}"
    size = len(audio)
    with logged_cleanly(server):
        for header in (f"bytes=0-{HUGE}", f"bytes=-{HUGE}"):
            whole = await client.get(url, headers={"Range": header})
            assert (whole.status_code, whole.content) == (206, audio)
            assert whole.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
        past = await client.get(url, headers={"Range": f"bytes={HUGE}-"})
        assert error_of(past, 416, "range_not_satisfiable") == {
            "code": "range_not_satisfiable",
            "message": f"The range {('bytes=' + HUGE)[:ECHO_CHARS] + '…'!r} is outside the "
            f"file's {size} bytes.",
        }


async def raw_request(server: ServerProcess, target: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """Send `GET target` over a socket of its own: status line, headers and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        auth = server.auth_headers["Authorization"].encode()
        writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nAuthorization: " + auth)
        writer.write(b"\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status, *lines = head.decode().split("\r\n")[:-2]
        headers = dict(line.split(": ", 1) for line in lines)
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
        return status.encode(), headers, body
    finally:
        writer.close()


async def test_a_url_past_the_parser_limit_is_refused_in_json(server: ServerProcess) -> None:
    path = b"/api/watch/threads.list?args="
    quoted_before = b"%7B%22before%22%3A%22" + b"x" * MAX_URL_BYTES + b"%22%7D"
    with logged_cleanly(server):
        status, headers, body = await raw_request(server, (path + quoted_before)[:70_000])
        assert status == b"HTTP/1.1 414 Request-URI Too Long"
        assert headers["content-type"] == "application/json"
        assert headers["connection"] == "close"
        assert body == b'{"error":{"code":"url_too_long","message":"%s"}}' % URL_TOO_LONG.encode()
        # One byte shorter is the app's to answer.
        fits = path + quoted_before[: MAX_URL_BYTES - len(path) - 6] + b"%22%7D"
        assert len(fits) == MAX_URL_BYTES
        status, headers, body = await raw_request(server, fits)
        assert status == b"HTTP/1.1 404 Not Found", body
        assert body == b'{"error":{"code":"thread_not_found","message":"No thread has id %s."}}' % (
            repr(CUT).encode()
        )
