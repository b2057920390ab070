"""Every refusal is `{"error": {"code", "message", ...}}` with the right status, on every route.

The tests share one server: none of them depends on which rows exist.
"""

from __future__ import annotations

import json
import re

import anyio
import anyio.abc
import httpx
import pytest
from starlette.routing import Route

from tests.support.api import error_of
from voicestack.config import Settings
from voicestack.http import create_app

pytestmark = [pytest.mark.anyio, pytest.mark.shared_server]


INTERNAL = {
    "code": "internal_error",
    "message": "The server failed to handle this request; its log has the details.",
}


# What anyone may request: health, the page and its files, the API's description.
PUBLIC = {"/healthz", "/", "/web/{file}", "/openapi.json", "/auth/providers", "/auth/logout"}
# Twilio's webhook takes no token: it is checked by its signature (tests/test_twilio.py).
# Sign-in's browser navigations take none either: they answer HTML pages
# (tests/test_signin_oidc.py).
SIGNED = {
    "/twilio/voice",
    "/auth/login/{provider}",
    "/auth/callback/{provider}",
    "/auth/email",
    "/auth/email/verify",
}


def routes() -> list[tuple[str, str]]:
    """(method, path) of every HTTP route of the app, each path parameter filled with `x` (the
    audio WebSocket's refusals are tested in tests/test_realtime_refusals.py)."""
    found = []
    for route in create_app(Settings()).routes:
        if not isinstance(route, Route):
            continue
        for method in sorted(set(route.methods or ()) - {"HEAD"}):
            found.append((method, route.path))
    return found


ROUTES = routes()


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r[1] not in PUBLIC | SIGNED])
async def test_every_route_but_the_public_ones_needs_a_token(server, method, path):
    url = server.url + re.sub(r"\{[^}]+\}", "x", path)
    async with httpx.AsyncClient(timeout=10) as anonymous:
        missing = await anonymous.request(method, url, json={})
        error_of(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"] == 'Bearer realm="voicestack"'
        unknown = await anonymous.request(
            method, url, json={}, headers={"Authorization": "Bearer vs_unknown"}
        )
        error_of(unknown, 401, "invalid_token")


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r[1] in PUBLIC])
async def test_the_public_routes_need_no_token(server, method, path):
    url = server.url + path.replace("{file}", "app.js")
    async with httpx.AsyncClient(timeout=10) as anonymous:
        assert (await anonymous.request(method, url)).status_code == 200


async def test_body_that_is_not_json(client):
    for body in (b'{"args": {', b"\xff\xfe{}", b"args=1"):
        response = await client.post("/api/mutation/items.add", content=body)
        error = error_of(response, 400, "invalid_json")
        assert error["message"].startswith("The request body is not valid JSON")


async def test_body_over_the_limit(client):
    body = b'{"args": {"name": "%s"}}' % (b"x" * 1_048_576)
    response = await client.post("/api/mutation/items.add", content=body)
    assert error_of(response, 413, "body_too_large") == {
        "code": "body_too_large",
        "message": "The body is over the 1048576-byte limit.",
    }


async def test_unknown_function(client):
    for kind in ("query", "mutation", "action"):
        response = await client.post(f"/api/{kind}/items.nope", json={"args": {}})
        assert error_of(response, 404, "unknown_function") == {
            "code": "unknown_function",
            "message": "No function is named 'items.nope'; GET /api/functions lists them.",
        }


async def test_arguments_that_fail_validation(client):
    response = await client.post("/api/mutation/items.add", json={"args": {"name": ""}})
    assert error_of(response, 422, "invalid_args") == {
        "code": "invalid_args",
        "message": "Invalid arguments: name: String should have at least 1 character.",
        "fields": [{"field": "name", "message": "String should have at least 1 character"}],
    }
    response = await client.post("/api/mutation/items.add", json={"args": {}})
    assert error_of(response, 422, "invalid_args") == {
        "code": "invalid_args",
        "message": "Invalid arguments: name: Field required.",
        "fields": [{"field": "name", "message": "Field required"}],
    }


async def test_body_of_the_wrong_shape(client):
    cases = [
        (["pen"], 'The body must be a JSON object: {"args": {...}}.'),
        ({"name": "pen"}, "Unexpected key(s) ['name'] in the body: send {\"args\": {...}}."),
        ({"args": "pen"}, '"args" must be a JSON object.'),
    ]
    for body, message in cases:
        response = await client.post("/api/mutation/items.add", json=body)
        assert error_of(response, 422, "invalid_args") == {
            "code": "invalid_args",
            "message": message,
        }


async def test_function_error_keeps_its_code_and_status(client):
    response = await client.post("/api/mutation/items.add_then_fail", json={"args": {"name": "x"}})
    assert error_of(response, 400, "boom") == {
        "code": "boom",
        "message": "Refused x after inserting it.",
    }


async def test_unexpected_exception_is_a_500_without_internals(client):
    response = await client.post("/api/mutation/items.explode", json={"args": {"name": "x"}})
    assert error_of(response, 500, "internal_error") == INTERNAL
    for leak in ("Traceback", 'File "', "RuntimeError", "secret detail"):
        assert leak not in response.text


async def test_failed_mutations_leave_the_database_exactly_as_it_was(client, api):
    kept = await api.mutation("items.add", {"name": "kept"})
    noted = await api.mutation("audit.add", {"note": "kept too"})
    before = await api.query("db.dump")

    refused = await client.post("/api/mutation/items.add_then_fail", json={"args": {"name": "a"}})
    crashed = await client.post("/api/mutation/items.explode", json={"args": {"name": "b"}})
    error_of(refused, 400, "boom")
    error_of(crashed, 500, "internal_error")

    after = await api.query("db.dump")
    assert after == before
    assert before.version == noted.version
    assert before.value["items"][-1] == {"id": kept.value["id"], "name": "kept"}
    assert before.value["audit"][-1] == {"id": noted.value["id"], "note": "kept too"}


async def test_a_mutation_whose_value_is_not_json_commits_nothing(client, api):
    # The client hears 500 and will retry: the write it was told failed must not be there.
    before = await api.query("db.dump")
    response = await client.post(
        "/api/mutation/items.add_returning_bytes", json={"args": {"name": "ghost"}}
    )
    assert error_of(response, 500, "internal_error") == INTERNAL
    assert await api.query("db.dump") == before


async def test_unknown_route(client):
    response = await client.get("/no/such/route")
    assert error_of(response, 404, "not_found") == {
        "code": "not_found",
        "message": "No route matches /no/such/route.",
    }


async def test_wrong_method(client):
    for method, path in [
        ("GET", "/api/mutation/items.add"),
        ("POST", "/healthz"),
        ("DELETE", "/api/functions"),
        ("POST", "/api/watch/items.list"),
    ]:
        response = await client.request(method, path)
        assert error_of(response, 405, "method_not_allowed") == {
            "code": "method_not_allowed",
            "message": f"{method} is not allowed on {path}.",
        }


async def test_function_of_the_wrong_kind(client):
    response = await client.post("/api/mutation/items.list", json={"args": {}})
    assert error_of(response, 400, "wrong_function_kind") == {
        "code": "wrong_function_kind",
        "message": "'items.list' is a query, not a mutation: call it at /api/query/items.list.",
    }
    response = await client.post("/api/query/items.add", json={"args": {"name": "x"}})
    error_of(response, 400, "wrong_function_kind")
    response = await client.get("/api/watch/items.add")
    error_of(response, 400, "wrong_function_kind")


async def test_watch_with_args_that_are_not_json(client):
    response = await client.get("/api/watch/items.list", params={"args": "{"})
    error = error_of(response, 400, "invalid_json")
    assert error["message"].startswith("The args parameter is not valid JSON")


async def test_watch_of_an_unknown_function(client):
    response = await client.get("/api/watch/items.nope")
    error_of(response, 404, "unknown_function")


async def test_watch_with_invalid_args(client):
    args = json.dumps({"prefix": "x", "limit": "many"})
    response = await client.get("/api/watch/items.search", params={"args": args})
    assert error_of(response, 422, "invalid_args") == {
        "code": "invalid_args",
        "message": "Invalid arguments: limit: Input should be a valid integer, "
        "unable to parse string as an integer.",
        "fields": [
            {
                "field": "limit",
                "message": "Input should be a valid integer, unable to parse string as an integer",
            }
        ],
    }


async def test_multi_watch_refusals(client):
    cases = [
        (None, 400, "missing_parameter"),
        ("[", 400, "invalid_json"),
        ("[]", 422, "invalid_args"),
        ('[{"id": "a"}]', 422, "invalid_args"),
        (
            '[{"id": "a", "name": "items.list"}, {"id": "a", "name": "items.count"}]',
            422,
            "invalid_args",
        ),
        ('[{"id": "a", "name": "items.nope"}]', 404, "unknown_function"),
        ('[{"id": "a", "name": "items.add"}]', 400, "wrong_function_kind"),
    ]
    for q, status, code in cases:
        params = {} if q is None else {"q": q}
        response = await client.get("/api/watch", params=params)
        error_of(response, status, code)


async def test_watch_with_arguments_the_query_does_not_take(client):
    response = await client.get("/api/watch/items.list", params={"args": json.dumps({"x": 1})})
    assert error_of(response, 422, "invalid_args")["fields"] == [
        {"field": "x", "message": "Extra inputs are not permitted"}
    ]


async def test_query_refusal_keeps_its_status_on_query_and_on_watch(client):
    expected = {"code": "not_found", "message": "No item has id 99."}
    response = await client.post("/api/query/items.get", json={"args": {"id": 99}})
    assert error_of(response, 404, "not_found") == expected
    response = await client.get("/api/watch/items.get", params={"args": '{"id": 99}'})
    assert error_of(response, 404, "not_found") == expected


async def test_query_crash_is_a_500_on_query_and_on_watch(client):
    response = await client.post("/api/query/items.broken")
    assert error_of(response, 500, "internal_error") == INTERNAL
    response = await client.get("/api/watch/items.broken")
    error_of(response, 500, "internal_error")
    assert "secret detail" not in response.text


async def test_a_500_leaves_the_connection_usable(server):
    # A response without `Connection: close` promises the client may send its next request on
    # the same connection; after a 500 the server must keep that promise or not make it.
    host, port = server.url.removeprefix("http://").split(":")
    request = (
        b"POST /api/mutation/items.explode HTTP/1.1\r\nHost: test\r\n"
        + f"Authorization: Bearer {server.token}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 23\r\n\r\n"
        b'{"args": {"name": "x"}}'
    )
    with anyio.fail_after(10):
        async with await anyio.connect_tcp(host, int(port)) as sock:
            await sock.send(request)
            first = await read_http_response(sock)
            head = first.split(b"\r\n\r\n")[0].lower()
            assert head.startswith(b"http/1.1 500 ")
            if b"\r\nconnection: close" in head:
                return  # the server said it closes: honest
            await sock.send(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            second = await read_http_response(sock)
    assert second.startswith(b"HTTP/1.1 200 OK\r\n"), second


async def read_http_response(sock: anyio.abc.SocketStream) -> bytes:
    """One HTTP/1.1 response with a Content-Length body; b"" when the server closed instead."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            data += await sock.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
            return data
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        body += await sock.receive()
    return head + b"\r\n\r\n" + body
