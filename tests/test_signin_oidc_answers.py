"""Sign-in checks what providers answer: forgeries, replays, GitHub, verified emails, names."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.api import error_of
from tests.support.oidc_provider import (
    CLIENT_ID,
    OidcProvider,
    browser,
    sign_in,
)
from tests.support.oidc_site import refusal, signin_fixtures
from tests.support.server import ServerProcess
from voicestack.auth.signin_users import Profile, sign_in_user
from voicestack.http.redact import redact
from voicestack.schema import ALL_MIGRATIONS
from voicestack.store.connection import open_connection
from voicestack.store.db import WriteDB
from voicestack.store.migrations import migrate_core

pytestmark = pytest.mark.anyio


provider, site, person = signin_fixtures()


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
