"""Sign-in with an OpenID Connect provider (tests/support/oidc_provider.py, a real one on a
loopback port): the code flow with state, nonce and PKCE, the session cookies and CSRF, `GET
/api/me`, sessions that slide and end, signing out, disabling users and the host's user commands."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import anyio
import apsw
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from tests.support.api import error_of
from tests.support.cli import invoke
from tests.support.oidc_provider import (
    CLIENT_ID,
    OidcProvider,
    browser,
    csrf_header,
    sign_in,
)
from tests.support.oidc_site import refusal, signin_fixtures
from tests.support.server import ServerProcess
from tests.support.sse import watch
from voicestack.auth.sessions import session_hash
from voicestack.http.signin_auth import session_cookie_headers

pytestmark = pytest.mark.anyio
# Streams end at the commit that revokes their access; the wait only bounds a slow machine.
STREAM_END_S = 5.0


provider, site, person = signin_fixtures()


async def test_signing_in_finds_or_creates_the_user_and_sets_the_session_cookies(
    site: ServerProcess, provider: OidcProvider, person: str
) -> None:
    async with browser(site) as http:
        login = await http.get("/auth/login/oidc")
        assert login.status_code == 302
        asked = {k: v[0] for k, v in parse_qs(urlsplit(login.headers["location"]).query).items()}
        assert asked["code_challenge_method"] == "S256"
        assert {"state", "nonce", "code_challenge"} <= set(asked)
        assert asked["client_id"] == CLIENT_ID
        assert asked["redirect_uri"] == f"{site.url}/auth/callback/oidc"
        approved = await http.get(login.headers["location"])
        done = await http.get(approved.headers["location"])
        assert (done.status_code, done.headers["location"]) == (303, "/")
        cookies = done.headers.get_list("set-cookie")
        session, csrf = http.cookies["vs_session"], http.cookies["vs_csrf"]
        age = 14 * 86_400
        assert sorted(c for c in cookies if not c.startswith("vs_login")) == [
            f"vs_csrf={csrf}; Max-Age={age}; Path=/; SameSite=Lax",
            f"vs_session={session}; Max-Age={age}; Path=/; SameSite=Lax; HttpOnly",
        ]
        me = (await http.get("/api/me")).json()
        assert me == {"id": me["id"], "name": person, "email": person, "role": "user"}
    # The same subject again is the same user, with a new session.
    async with browser(site) as http:
        assert (await sign_in(http)).status_code == 303
        assert http.cookies["vs_session"] != session
        assert (await http.get("/api/me")).json() == me


def test_the_session_cookies_are_secure_behind_https() -> None:
    assert session_cookie_headers("vss_x", 60, secure=True) == [
        (b"set-cookie", b"vs_session=vss_x; Max-Age=60; Path=/; SameSite=Lax; Secure; HttpOnly"),
        (
            b"set-cookie",
            b"vs_csrf=" + _csrf("vss_x") + b"; Max-Age=60; Path=/; SameSite=Lax; Secure",
        ),
    ]


def _csrf(secret: str) -> bytes:
    from voicestack.auth.sessions import csrf_value

    return csrf_value(secret).encode()


async def test_writes_by_cookie_need_the_csrf_header_and_bearer_calls_do_not(
    site: ServerProcess, person: str
) -> None:
    async with browser(site) as http:
        await sign_in(http)
        error_of(await http.post("/api/threads", json={}), 403, "csrf_failed")
        wrong = {"X-CSRF-Token": http.cookies["vs_session"]}
        error_of(await http.post("/api/threads", json={}, headers=wrong), 403, "csrf_failed")
        error_of(await http.post("/auth/logout"), 403, "csrf_failed")
        created = await http.post("/api/threads", json={"title": "t"}, headers=csrf_header(http))
        assert created.status_code == 201, created.text
        listed = (await http.get("/api/threads")).json()
        assert [t["id"] for t in listed] == [created.json()["id"]]
    async with site.client() as bearer:
        assert (await bearer.post("/api/threads", json={})).status_code == 201
        assert (await bearer.get("/api/me")).json()["role"] == "admin"


async def test_signing_out_ends_the_session(site: ServerProcess, person: str) -> None:
    async with browser(site) as http:
        await sign_in(http)
        session = http.cookies["vs_session"]
        out = await http.post("/auth/logout", headers=csrf_header(http))
        assert (out.status_code, out.json()) == (200, {"ok": True})
        assert "vs_session" not in http.cookies
        http.cookies.set("vs_session", session)
        error_of(await http.get("/api/me"), 401, "session_ended")


def _set_expiry(site: ServerProcess, secret: str, expires_at: float) -> None:
    db = apsw.Connection(str(site.db_path))
    try:
        db.set_busy_timeout(5000)
        db.execute(
            "UPDATE auth_sessions SET expires_at = ? WHERE hash = ?",
            (expires_at, session_hash(secret)),
        )
    finally:
        db.close()


def _expiry(site: ServerProcess, secret: str) -> float:
    db = apsw.Connection(str(site.db_path))
    try:
        query = "SELECT expires_at FROM auth_sessions WHERE hash = ?"
        (expires,) = db.execute(query, (session_hash(secret),)).fetchall()[0]
        assert isinstance(expires, float)
        return expires
    finally:
        db.close()


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until `check()` (the server hears of another process's commit by polling)."""
    with anyio.fail_after(STREAM_END_S):
        while not await check():
            await anyio.sleep(0.05)


async def test_a_session_slides_forward_when_used_and_ends_when_left(
    site: ServerProcess, person: str
) -> None:
    day = 86_400
    async with browser(site) as http:
        await sign_in(http)
        secret = http.cookies["vs_session"]
        # A day and a minute later, as the database sees it: the next request extends it.
        _set_expiry(site, secret, time.time() + 13 * day - 60)

        async def renewed() -> bool:
            response = await http.get("/api/me")
            assert response.status_code == 200, response.text
            return any(c.startswith("vs_session=") for c in response.headers.get_list("set-cookie"))

        await _until(renewed)
        assert _expiry(site, secret) > time.time() + 14 * day - 60
        assert http.cookies["vs_session"] == secret  # the same session, its cookie renewed
        # Left unused past its expiry: it has ended.
        _set_expiry(site, secret, time.time() - 1)

        async def ended() -> bool:
            return (await http.get("/api/me")).status_code == 401

        await _until(ended)
        error_of(await http.get("/api/me"), 401, "session_ended")


async def test_the_audio_socket_takes_the_cookie_only_from_this_servers_page(
    site: ServerProcess, person: str
) -> None:
    async with browser(site) as http:
        await sign_in(http)
        created = await http.post("/api/threads", json={}, headers=csrf_header(http))
        cookie = {"Cookie": f"vs_session={http.cookies['vs_session']}"}
    url = f"{site.url.replace('http', 'ws', 1)}/api/threads/{created.json()['id']}/audio"
    async with connect(url, additional_headers=cookie, origin=Origin(site.url)) as socket:
        await socket.send("not json")  # past the cookie's check: a bad first frame
        assert json.loads(await socket.recv())["code"] == "invalid_json"
    forged = Origin("http://evil.example")
    async with connect(url, additional_headers=cookie, origin=forged) as socket:
        assert json.loads(await socket.recv())["code"] == "csrf_failed"
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "csrf_failed")


async def test_disabling_a_user_ends_their_streams_sessions_and_tokens(
    site: ServerProcess, person: str
) -> None:
    async with contextlib.AsyncExitStack() as stack, browser(site) as http, browser(site) as other:
        await sign_in(http)
        token = site.create_token(person)  # the signed-in user's own token too
        bearer = await stack.enter_async_context(site.client(token=token))
        created = await http.post("/api/threads", json={}, headers=csrf_header(http))
        feed = f"/api/threads/{created.json()['id']}/events"
        async with (
            watch(http, feed) as by_cookie,
            watch(http, "/api/watch/threads.list") as listing,
            watch(bearer, "/api/watch/threads.list") as by_token,
        ):
            assert (await by_cookie.next()).event == "ready"
            assert (await listing.next()).event == "value"
            assert (await by_token.next()).event == "value"
            disabled = invoke(["user", "disable", person, "--db", str(site.db_path)])
            assert disabled.exit_code == 0, disabled.stderr
            for stream in (by_cookie, listing, by_token):
                await stream.ended(STREAM_END_S)
        error_of(await http.get("/api/me"), 401, "session_ended")
        error_of(await bearer.get("/api/me"), 401, "invalid_token")
        refusal(await sign_in(other), 403, "user_disabled")
        async with site.client(token=site.create_token(person)) as new_token:
            error_of(await new_token.get("/api/me"), 401, "invalid_token")
    again = invoke(["user", "disable", person, "--db", str(site.db_path)])
    assert again.exit_code == 1
    assert again.stderr.startswith(f"error: {person} was already disabled at ")


async def test_signing_out_ends_the_streams_of_that_session_only(
    site: ServerProcess, person: str
) -> None:
    async with browser(site) as leaving, browser(site) as staying:
        await sign_in(leaving)
        await sign_in(staying)
        async with (
            watch(leaving, "/api/watch/threads.list") as ended,
            watch(staying, "/api/watch/threads.list") as kept,
        ):
            assert (await ended.next()).event == "value"
            assert (await kept.next()).event == "value"
            assert (await leaving.post("/auth/logout", headers=csrf_header(leaving))).is_success
            await ended.ended(STREAM_END_S)
            created = await staying.post("/api/threads", json={}, headers=csrf_header(staying))
            assert created.status_code == 201
            assert [t["id"] for t in (await kept.next()).json["value"]] == [created.json()["id"]]


def test_users_are_listed_and_promoted_on_the_host(site: ServerProcess, person: str) -> None:
    # The user exists once they signed in (the test above made others; this one signs in here).
    import anyio

    async def first_sign_in() -> None:
        async with browser(site) as http:
            assert (await sign_in(http)).status_code == 303

    anyio.run(first_sign_in)
    db = ["--db", str(site.db_path)]
    listed = invoke(["user", "list", "--json", *db])
    assert listed.exit_code == 0, listed.stderr
    row = next(u for u in json.loads(listed.stdout) if u["name"] == person)
    assert row == {
        "id": row["id"],
        "name": person,
        "email": person,
        "role": "user",
        "createdAt": row["createdAt"],
        "disabledAt": None,
    }
    promoted = invoke(["user", "role", person, "admin", *db])
    assert (promoted.exit_code, promoted.stderr) == (0, f"{person} is now admin\n")
    again = invoke(["user", "role", person, "admin", *db])
    assert (again.exit_code, again.stderr) == (
        1,
        f"error: {person} is already admin; nothing changed.\n",
    )
    unknown = invoke(["user", "disable", "nobody-here", *db])
    assert unknown.exit_code == 1
    assert unknown.stderr == "error: No user is named 'nobody-here' (`voicestack user list`).\n"
