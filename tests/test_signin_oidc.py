"""Sign-in with an OpenID Connect provider (tests/support/oidc_provider.py, a real one on a
loopback port): the code flow with state, nonce and PKCE, the session cookies, `GET /api/me`,
signing out, and each forged or replayed answer refused with a page that says why."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import apsw
import httpx
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
    github_config,
    oidc_provider,
    sign_in,
    signin_server,
)
from tests.support.server import ServerProcess
from tests.support.sse import watch
from voicestack.auth.sessions import session_hash
from voicestack.auth.signin_users import Profile, sign_in_user
from voicestack.http.redact import redact
from voicestack.http.signin_auth import session_cookie_headers
from voicestack.schema import ALL_MIGRATIONS
from voicestack.store.connection import open_connection
from voicestack.store.db import WriteDB
from voicestack.store.migrations import migrate_core

pytestmark = pytest.mark.anyio
# Streams end at the commit that revokes their access; the wait only bounds a slow machine.
STREAM_END_S = 5.0


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    with oidc_provider() as running:
        yield running


@pytest.fixture(scope="module")
def site(
    provider: OidcProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("signin")
    allowed = ["--signin-allowed-domains", "example.com"]
    # A provider that cannot be reached: nothing listens on port 9 of loopback.
    down = '[auth.oidc.down]\nissuer = "http://127.0.0.1:9"\nclient_id = "x"\n'
    config = github_config(provider) + down
    with signin_server(workdir, provider, *allowed, config=config) as server:
        yield server


@pytest.fixture
def person(provider: OidcProvider) -> Iterator[str]:
    """A new person of example.com, whom the provider signs in; honest again afterwards."""
    name = f"p{secrets.token_hex(4)}"
    provider.login_as(f"sub-{name}", f"{name}@example.com", name.title())
    yield f"{name}@example.com"
    provider.honest()


def refusal(response: httpx.Response, status: int, code: str) -> str:
    """Assert an HTML refusal page with `status` and `code`; returns its text."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert f'data-code="{code}"' in response.text, response.text
    return response.text


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


async def test_a_state_this_browser_did_not_start_is_refused(
    site: ServerProcess, provider: OidcProvider, person: str
) -> None:
    async with browser(site) as attacker, browser(site) as victim:
        # The attacker's own callback link, opened in the victim's browser (login CSRF).
        login = await attacker.get("/auth/login/oidc")
        approved = await attacker.get(login.headers["location"])
        refusal(await victim.get(approved.headers["location"]), 400, "state_mismatch")
        # The victim's own sign-in with its state replaced.
        login = await victim.get("/auth/login/oidc")
        approved = await victim.get(login.headers["location"])
        forged = approved.headers["location"].replace("state=", "state=x")
        refusal(await victim.get(forged), 400, "state_mismatch")
        error_of(await victim.get("/api/me"), 401, "unauthorized")


async def test_a_replayed_code_is_refused(
    site: ServerProcess, provider: OidcProvider, person: str
) -> None:
    async with browser(site) as http:
        login = await http.get("/auth/login/oidc")
        approved = await http.get(login.headers["location"])
        callback = approved.headers["location"]
        assert (await http.get(callback)).status_code == 303
        # The same answer again: its state was spent with the first.
        refusal(await http.get(callback), 400, "state_mismatch")
        # The spent code under a fresh state: the provider refuses it.
        login = await http.get("/auth/login/oidc")
        fresh = parse_qs(urlsplit(login.headers["location"]).query)["state"][0]
        code = parse_qs(urlsplit(callback).query)["code"][0]
        replay = f"/auth/callback/oidc?code={code}&state={fresh}"
        page = refusal(await http.get(replay), 400, "provider_refused")
        assert "invalid_grant" in page
    # A log line with the callback's URL (uvicorn's access log) masks its code and state.
    assert redact(f"GET {replay} 400") == (
        "GET /auth/callback/oidc?code=[redacted]&state=[redacted] 400"
    )


FORGERIES: list[tuple[str, dict[str, Any], bool, str]] = [
    ("wrong nonce", {"nonce": "not-the-one-sent"}, False, "id_token_invalid"),
    ("bad signature", {}, True, "id_token_bad_signature"),
    ("expired", {"exp": 1_000_000_000, "iat": 999_999_000}, False, "id_token_expired"),
    ("other audience", {"aud": "another-client"}, False, "id_token_invalid"),
    (
        "other audience, our azp",
        {"aud": "another-client", "azp": CLIENT_ID},
        False,
        "id_token_invalid",
    ),
    ("other issuer", {"iss": "https://issuer.example"}, False, "id_token_invalid"),
]


@pytest.mark.parametrize(
    ("forge", "forger_key", "code"),
    [f[1:] for f in FORGERIES],
    ids=[f[0] for f in FORGERIES],
)
async def test_a_forged_id_token_is_refused(
    site: ServerProcess,
    provider: OidcProvider,
    person: str,
    forge: dict[str, Any],
    forger_key: bool,
    code: str,
) -> None:
    provider.forge, provider.sign_with_forger_key = forge, forger_key
    async with browser(site) as http:
        refusal(await sign_in(http), 400, code)
        assert "vs_session" not in http.cookies
        error_of(await http.get("/api/me"), 401, "unauthorized")


async def test_signing_in_with_github_uses_its_oauth2_api(
    site: ServerProcess, provider: OidcProvider
) -> None:
    number = secrets.randbelow(10**9)
    provider.login_as(str(number), f"gh{number}@example.com", f"octo{number}")
    async with browser(site) as http:
        login = await http.get("/auth/login/github")
        asked = {k: v[0] for k, v in parse_qs(urlsplit(login.headers["location"]).query).items()}
        assert login.headers["location"].startswith(f"{provider.url}/github/login/oauth/authorize")
        assert (asked["code_challenge_method"], asked["scope"]) == ("S256", "read:user user:email")
        approved = await http.get(login.headers["location"])
        assert (await http.get(approved.headers["location"])).status_code == 303
        me = (await http.get("/api/me")).json()
        email = f"gh{number}@example.com"
        assert me == {"id": me["id"], "name": email, "email": email, "role": "user"}


async def test_sign_up_is_open_only_to_the_allowed_domains(
    site: ServerProcess, provider: OidcProvider
) -> None:
    provider.login_as(f"sub-{secrets.token_hex(4)}", "eve@elsewhere.org", "Eve")
    async with browser(site) as http:
        page = refusal(await sign_in(http), 403, "signup_not_allowed")
        assert "example.com" in page


async def test_an_email_counts_only_when_the_provider_says_it_verified_it(
    site: ServerProcess, provider: OidcProvider
) -> None:
    # Missing, `false`, or a string: not verified, so not an allowed domain's email.
    for claim in [None, False, "false", "true"]:
        provider.login_as(f"sub-{secrets.token_hex(4)}", "ivy@example.com", "Ivy")
        provider.forge = {"email_verified": claim}
        async with browser(site) as http:
            refusal(await sign_in(http), 403, "signup_not_allowed")
    provider.honest()
    # GitHub: an unverified email is not used, not even the profile's own.
    number = secrets.randbelow(10**9)
    provider.login_as(str(number), f"gh{number}@example.com", f"octo{number}", verified=False)
    async with browser(site) as http:
        refusal(await sign_in(http, "github"), 403, "signup_not_allowed")
    # A provider user name that is not a string is ignored, not a crash.
    person = f"jo{secrets.token_hex(4)}@example.com"
    provider.login_as(f"sub-{secrets.token_hex(4)}", person, "Jo")
    provider.forge = {"preferred_username": {"not": "a string"}}
    try:
        async with browser(site) as http:
            assert (await sign_in(http)).status_code == 303
            assert (await http.get("/api/me")).json()["name"] == person
    finally:
        provider.honest()


def test_new_names_come_from_verified_emails_and_never_take_a_reserved_one(
    tmp_path: Path,
) -> None:
    conn = open_connection(tmp_path / "names.db")
    migrate_core(conn, ALL_MIGRATIONS)
    db = WriteDB(conn)
    taken = {"twilio"}

    def name(profile: Profile) -> str:
        with conn:
            return sign_in_user(db, profile, [], taken).name

    assert name(Profile("oidc", "1", "ann@example.com", True, "twilio")) == "ann@example.com"
    # An unverified email, or a provider's user name, is not a name: anyone could claim it.
    assert name(Profile("oidc", "2", "ann@example.com", None, "ann")) == "oidc-2"
    assert name(Profile("oidc", "3", "bob@example.com", False, "twilio")) == "oidc-3"
    # Never the phone calls' user, never another user's name.
    assert name(Profile("twilio", "", None, None)) == "twilio-2"
    taken.add("oidc-4")
    assert name(Profile("oidc", "4")) == "oidc-4-2"
    assert name(Profile("oidc", "2", "x@example.com", True)) == "oidc-2"  # found, not renamed
    assert name(Profile("gh", "x" * 300)).startswith("gh-xxx")
    assert len(name(Profile("gh", "x" * 300 + "y"))) <= 64
    conn.close()


async def test_an_unknown_or_unreachable_provider_is_a_page_that_says_so(
    site: ServerProcess,
) -> None:
    async with browser(site) as http:
        refusal(await http.get("/auth/login/nope"), 404, "unknown_provider")
        refusal(await http.get("/auth/login/down"), 502, "provider_unreachable")
        providers = (await http.get("/auth/providers")).json()
        assert providers == {
            "providers": [
                {"name": "down", "title": "Down", "url": "/auth/login/down"},
                {"name": "oidc", "title": "SSO", "url": "/auth/login/oidc"},
                {"name": "github", "title": "GitHub", "url": "/auth/login/github"},
            ],
            "email": False,
        }


async def test_email_sign_in_is_off_without_smtp(site: ServerProcess) -> None:
    async with browser(site) as http:
        refused = await http.post("/auth/email", json={"email": "a@example.com"})
        error_of(refused, 404, "email_signin_off")


def test_discovery_is_fetched_once(provider: OidcProvider, site: ServerProcess) -> None:
    # Runs after the sign-ins above (module order): all of them shared one discovery.
    assert provider.discovery_requests == 1


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
