"""A small OpenID Connect provider on a loopback port, for the sign-in tests: discovery, JWKS, an
authorize endpoint that approves at once as the user a test chose, a token endpoint that checks
the client, the redirect URI and the PKCE verifier and spends each code once, and id_tokens
signed with joserfc. A test can make it forge what a bad provider or an attacker would send.

It also answers GitHub's OAuth2 API under `/github` (authorize, access_token, user, emails), as
GitHub Enterprise's addresses would.
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from tests.support.server import TEST_APP, ServerProcess

CLIENT_ID = "voicestack-test"
CLIENT_SECRET = "test-secret-" + "x" * 16
KEY_ID = "test-key-1"


@dataclass
class Person:
    """Who the provider signs in next."""

    subject: str
    email: str | None = None
    name: str | None = None
    email_verified: bool = True


@dataclass
class Grant:
    """An issued authorization code, until it is spent."""

    client_id: str
    redirect_uri: str
    nonce: str | None
    challenge: str | None
    person: Person
    spent: bool = False


@functools.cache
def _keys() -> tuple[RSAKey, RSAKey]:
    """The provider's signing key and a forger's key of the same id (made once: RSA is slow)."""
    return RSAKey.generate_key(2048, {"kid": KEY_ID}), RSAKey.generate_key(2048, {"kid": KEY_ID})


@dataclass
class OidcProvider:
    """The provider's state: its keys, the next person, the codes it issued, and what to forge."""

    url: str = ""
    key: RSAKey = field(default_factory=lambda: _keys()[0])
    # A key of the same id that is not in the JWKS: what a forger would sign with.
    forger_key: RSAKey = field(default_factory=lambda: _keys()[1])
    person: Person = field(default_factory=lambda: Person("subject-1", "ana@example.com", "Ana"))
    # Claims to replace in the next id_tokens ({"nonce": "wrong"}, {"exp": 1}, ...), and
    # whether to sign them with the forger's key.
    forge: dict[str, Any] = field(default_factory=dict)
    sign_with_forger_key: bool = False
    grants: dict[str, Grant] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    discovery_requests: int = 0

    @property
    def issuer(self) -> str:
        """The issuer URL (also the base of every endpoint)."""
        return self.url

    def login_as(
        self, subject: str, email: str | None, name: str | None = None, verified: bool = True
    ) -> None:
        """Approve the next sign-ins as this person (whose email the provider verified or not)."""
        self.person = Person(subject, email, name, verified)

    def honest(self) -> None:
        """Stop forging."""
        self.forge = {}
        self.sign_with_forger_key = False

    def discovery(self) -> dict[str, Any]:
        """The provider's /.well-known/openid-configuration."""
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "jwks_uri": f"{self.url}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        }

    def jwks(self) -> dict[str, Any]:
        """The public keys, as the JWKS endpoint answers."""
        keys: dict[str, Any] = dict(KeySet([self.key]).as_dict(private=False))
        return keys

    def authorize(self, params: dict[str, str]) -> str:
        """Approve at once: the redirect URI with a fresh code and the request's state."""
        self.authorize_requests.append(params)
        code = secrets.token_urlsafe(16)
        self.grants[code] = Grant(
            params.get("client_id", ""),
            params.get("redirect_uri", ""),
            params.get("nonce"),
            params.get("code_challenge"),
            self.person,
        )
        answer = {"code": code, "state": params.get("state", "")}
        return f"{params['redirect_uri']}?{urlencode(answer)}"

    def exchange(self, form: dict[str, str], basic: str | None) -> tuple[int, dict[str, Any]]:
        """The token endpoint: (status, JSON body)."""
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if basic is not None:
            client_id, _, client_secret = base64.b64decode(basic).decode().partition(":")
        if (client_id, client_secret) != (CLIENT_ID, CLIENT_SECRET):
            return 401, {"error": "invalid_client"}
        grant = self.grants.get(form.get("code", ""))
        if grant is None or grant.spent:
            return 400, {"error": "invalid_grant", "error_description": "code used or unknown"}
        grant.spent = True
        if grant.redirect_uri != form.get("redirect_uri") or grant.client_id != client_id:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"}
        verifier = form.get("code_verifier", "")
        if grant.challenge is None or create_s256_code_challenge(verifier) != grant.challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verifier mismatch"}
        access_token = secrets.token_urlsafe(16)
        self.grants[f"access:{access_token}"] = grant
        body: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": "openid email profile",
        }
        if grant.nonce is not None:
            body["id_token"] = self.id_token(grant)
        return 200, body

    def id_token(self, grant: Grant) -> str:
        """A signed id_token for `grant`, with the forged claims."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": grant.person.subject,
            "aud": grant.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": grant.nonce,
            "name": grant.person.name,
            "email": grant.person.email,
            "email_verified": grant.person.email_verified,
        }
        claims.update(self.forge)
        key = self.forger_key if self.sign_with_forger_key else self.key
        return jwt.encode({"alg": "RS256", "kid": KEY_ID}, claims, key)

    def github_user(self, authorization: str | None) -> Person | None:
        """The person a GitHub API call's bearer token belongs to."""
        token = (authorization or "").removeprefix("Bearer ").removeprefix("token ")
        grant = self.grants.get(f"access:{token}")
        return grant.person if grant else None


class _Handler(BaseHTTPRequestHandler):
    provider: OidcProvider

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests print what they need

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        p = self.provider
        if url.path == "/.well-known/openid-configuration":
            p.discovery_requests += 1
            self._json(200, p.discovery())
        elif url.path == "/jwks":
            self._json(200, p.jwks())
        elif url.path in ("/authorize", "/github/login/oauth/authorize"):
            self._redirect(p.authorize(params))
        elif url.path in ("/github/api/user", "/github/api/user/emails"):
            person = p.github_user(self.headers.get("Authorization"))
            if person is None:
                self._json(401, {"message": "Bad credentials"})
            elif url.path.endswith("/emails"):
                verified = person.email_verified
                emails = [{"email": person.email, "primary": True, "verified": verified}]
                self._json(200, emails if person.email else [])
            else:
                user = {"id": int(person.subject), "login": person.name, "name": person.name}
                self._json(200, {**user, "email": person.email})
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if url.path in ("/token", "/github/login/oauth/access_token"):
            auth = self.headers.get("Authorization")
            basic = auth.removeprefix("Basic ") if auth and auth.startswith("Basic ") else None
            status, body = self.provider.exchange(form, basic)
            self._json(status, body)
        else:
            self._json(404, {"error": "not_found"})


@contextmanager
def oidc_provider() -> Iterator[OidcProvider]:
    """A running provider on a loopback port, stopped afterwards."""
    provider = OidcProvider()
    handler = type("Handler", (_Handler,), {"provider": provider})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    provider.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="oidc-provider", daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def signin_server(
    workdir: Path, provider: OidcProvider, *extra_args: str, config: str = ""
) -> Iterator[ServerProcess]:
    """A voicestack server whose sign-in provider `oidc` is `provider`, with `config` as its
    voicestack.toml; stopped with SIGTERM afterwards, which must exit 0."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["--oidc-issuer", provider.issuer, "--oidc-client-id", CLIENT_ID]
    args += ["--oidc-client-secret", CLIENT_SECRET, *extra_args]
    server = ServerProcess(workdir, TEST_APP, args, {"OPENAI_API_KEY": None})
    server.config_path.write_text(config)
    try:
        server.start()
        yield server
        assert server.stop() == 0, "the server did not exit 0 after SIGTERM"
    finally:
        if server.running:
            server.kill()
        print(f"--- {' '.join(server.command)}\n{server.log()}")


def github_config(provider: OidcProvider) -> str:
    """`[auth.github]` for the provider's GitHub-shaped addresses."""
    return (
        "[auth.github]\n"
        f'client_id = "{CLIENT_ID}"\nclient_secret = "{CLIENT_SECRET}"\n'
        f'web_url = "{provider.url}/github"\napi_url = "{provider.url}/github/api"\n'
    )


def browser(server: ServerProcess) -> httpx.AsyncClient:
    """A client that acts as a browser would: no token, keeps cookies, follows no redirects."""
    return httpx.AsyncClient(base_url=server.url, timeout=10.0)


async def sign_in(http: httpx.AsyncClient, provider_name: str = "oidc") -> httpx.Response:
    """Go through a sign-in as a browser does: login, the provider's approval, the callback.
    Returns the callback's answer (303 to the page when the sign-in succeeded)."""
    login = await http.get(f"/auth/login/{provider_name}")
    assert login.status_code == 302, login.text
    approved = await http.get(login.headers["location"])
    assert approved.status_code == 302, approved.text
    return await http.get(approved.headers["location"])


def csrf_header(http: httpx.AsyncClient) -> dict[str, str]:
    """X-CSRF-Token with the client's vs_csrf cookie."""
    return {"X-CSRF-Token": http.cookies["vs_csrf"]}
