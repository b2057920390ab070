"""CORS for the origins `--cors-origin` names (none by default), and the security headers every
response carries, event streams and errors included."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from pydantic import ValidationError

from tests.support.api import error_of
from tests.support.server import TEST_APP, ServerProcess, running_server
from tests.support.sse import watch
from voicestack.config import Settings
from voicestack.http.headers import API_POLICY
from voicestack.http.web import PAGE_POLICY

pytestmark = [pytest.mark.anyio, pytest.mark.shared_server]

APP_ORIGIN = "https://app.example.com"
DEV_ORIGIN = "http://localhost:5173"
OTHER_ORIGIN = "https://evil.example.net"

SECURITY = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
API_HEADERS = {**SECURITY, "content-security-policy": API_POLICY, "cache-control": "no-store"}


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    flags = ["--cors-origin", APP_ORIGIN, "--cors-origin", DEV_ORIGIN]
    with running_server(tmp_path_factory.mktemp("cors"), TEST_APP, flags) as process:
        yield process


def cors_headers(response: httpx.Response) -> dict[str, str]:
    """The response's `access-control-*` headers."""
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    """The headers of a browser's preflight before a JSON call with a token."""
    return {
        "origin": origin,
        "access-control-request-method": method,
        "access-control-request-headers": "authorization,content-type",
    }


# -- CORS ------------------------------------------------------------------------------------------


async def test_without_cors_origins_there_are_no_cors_headers(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/query/items.count", json={}, headers={"origin": APP_ORIGIN})
    assert response.status_code == 200
    assert cors_headers(response) == {}
    # A preflight is just an OPTIONS request without a token: refused like any other.
    async with httpx.AsyncClient(base_url=str(client.base_url)) as anonymous:
        response = await anonymous.options("/api/query/items.count", headers=preflight(APP_ORIGIN))
    error_of(response, 401, "unauthorized")
    assert cors_headers(response) == {}


async def test_a_preflight_from_an_allowed_origin_allows_the_token_header(
    cors_server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=cors_server.url) as anonymous:
        for origin in (APP_ORIGIN, DEV_ORIGIN):
            response = await anonymous.options("/api/mutation/items.add", headers=preflight(origin))
            assert response.status_code == 200, response.text
            assert cors_headers(response) == {
                "access-control-allow-origin": origin,
                "access-control-allow-methods": "GET, POST",
                "access-control-allow-headers": (
                    "Accept, Accept-Language, Authorization, Content-Language, Content-Type,"
                    " Last-Event-ID"
                ),
                "access-control-max-age": "600",
            }


async def test_a_preflight_from_another_origin_is_refused(cors_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=cors_server.url) as anonymous:
        response = await anonymous.options(
            "/api/mutation/items.add", headers=preflight(OTHER_ORIGIN)
        )
        assert error_of(response, 400, "cors_refused") == {
            "code": "cors_refused",
            "message": "This cross-origin request is not allowed (its origin); the server names"
            " the origins it allows with --cors-origin.",
        }
        assert "access-control-allow-origin" not in response.headers
        response = await anonymous.options(
            "/api/mutation/items.add", headers=preflight(APP_ORIGIN, "DELETE")
        )
        assert error_of(response, 400, "cors_refused")["message"].startswith(
            "This cross-origin request is not allowed (its method);"
        )


async def test_responses_name_only_an_allowed_origin(cors_server: ServerProcess) -> None:
    async with cors_server.client() as http:
        response = await http.post(
            "/api/query/items.count", json={}, headers={"origin": APP_ORIGIN}
        )
        assert response.status_code == 200
        assert cors_headers(response) == {
            "access-control-allow-origin": APP_ORIGIN,
            "access-control-expose-headers": "Retry-After",
        }
        assert response.headers["vary"] == "Origin"
        response = await http.post(
            "/api/query/items.count", json={}, headers={"origin": OTHER_ORIGIN}
        )
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers
        # A refusal reaches the page's script too, so it can tell the user why.
        async with httpx.AsyncClient(base_url=cors_server.url) as anonymous:
            response = await anonymous.get("/api/threads", headers={"origin": APP_ORIGIN})
        error_of(response, 401, "unauthorized")
        assert response.headers["access-control-allow-origin"] == APP_ORIGIN
        # An EventSource from the allowed origin: its token in the URL, CORS on the stream.
        headers = {"origin": APP_ORIGIN}
        async with httpx.AsyncClient(base_url=cors_server.url, timeout=10) as anonymous:
            params = {"token": cors_server.token or ""}
            async with watch(
                anonymous, "/api/watch/items.count", params=params, headers=headers
            ) as stream:
                assert stream.response.headers["access-control-allow-origin"] == APP_ORIGIN
                assert (await stream.next()).json["value"] == 0


def test_a_cors_origin_must_be_an_origin() -> None:
    for origin in ("https://app.example.com/", "app.example.com", "https://x.com/path", "*"):
        with pytest.raises(ValidationError, match="is not an origin"):
            Settings.model_validate({"cors_origins": [origin]})
    settings = Settings.model_validate({"cors_origins": [APP_ORIGIN, "http://[::1]:8000"]})
    assert settings.cors_origins == [APP_ORIGIN, "http://[::1]:8000"]


# -- security headers ------------------------------------------------------------------------------


def headers_of(response: httpx.Response, names: dict[str, str]) -> dict[str, str | None]:
    """The values `response` has for the headers in `names`."""
    return {name: response.headers.get(name) for name in names}


async def test_api_responses_and_errors_carry_the_security_headers(
    client: httpx.AsyncClient,
) -> None:
    responses = [
        await client.get("/healthz"),
        await client.post("/api/query/items.count"),
        await client.get("/api/functions"),
        await client.post("/api/query/items.nope"),
        await client.post("/api/mutation/items.explode", json={"args": {"name": "x"}}),
        await client.get("/api/threads", headers={"authorization": "Bearer nope"}),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 500, 401]
    for response in responses:
        assert headers_of(response, API_HEADERS) == API_HEADERS, response.request.url


async def test_an_event_stream_carries_them_and_still_streams(client: httpx.AsyncClient) -> None:
    async with watch(client, "/api/watch/items.count") as stream:
        assert headers_of(stream.response, API_HEADERS) == API_HEADERS
        first = await stream.next()
        added = await client.post("/api/mutation/items.add", json={"args": {"name": "pen"}})
        assert added.status_code == 200
        # The next value arrives while the stream stays open: nothing holds it back.
        changed = await stream.next()
        assert changed.json["value"] == first.json["value"] + 1


async def test_the_page_keeps_its_own_policy_and_caching(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert headers_of(page, SECURITY) == SECURITY
    assert page.headers["content-security-policy"] == PAGE_POLICY
    assert page.headers["cache-control"] == "no-cache"
    script = await client.get("/web/app.js")
    assert headers_of(script, SECURITY) == SECURITY
    assert script.headers["cache-control"] == "no-cache"
    # Each header once, even where the route set some itself.
    names = [name for name, _ in page.headers.multi_items()]
    assert len(names) == len(set(names)), names
