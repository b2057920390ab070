"""The identity providers of the sign-in, as Authlib clients: OpenID Connect ones by discovery,
GitHub by its OAuth2 API.

Authlib does the protocol: the authorization URL with `state`, `nonce` and a PKCE S256
challenge, the code exchange, and the id_token's check (signature against the provider's JWKS,
issuer, audience, expiry, nonce); discovery and the JWKS are fetched once per process and kept
(the JWKS again when a token names a key it does not hold). What Authlib keeps between the two
requests (state, nonce, verifier) waits in the database (`PendingLogins`), usable once; the
browser holds only the state, in a short-lived HttpOnly cookie that proves the callback comes
from the browser that started the sign-in.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from voicestack.auth.signin_pending import put_pending, take_pending
from voicestack.auth.signin_users import Profile
from voicestack.config import GithubConfig, OidcProviderConfig, Settings
from voicestack.store.db import WriteDB

# How long a started sign-in may take at the provider.
LOGIN_TTL_S = 600
LOGIN_COOKIE = "vs_login"
GITHUB_SCOPE = "read:user user:email"

Write = Callable[[Callable[[WriteDB], Any]], Awaitable[Any]]


@functools.cache
def http_errors() -> tuple[type[Exception], ...]:
    """What a provider's failure to answer raises: Authlib talks through httpx2 where it is
    installed (the openai client brings it), else through httpx. Asked when a sign-in runs, so
    that a server's start does not load httpx2."""
    try:
        import httpx2
    except ImportError:  # pragma: no cover - depends on what is installed
        return (httpx.HTTPError,)
    return (httpx.HTTPError, httpx2.HTTPError)


class PendingLogins:
    """Authlib's cache interface over the database: each entry is taken at most once."""

    def __init__(self, write: Write) -> None:
        self._write = write

    async def get(self, key: str) -> str | None:
        """The entry, removed as it is read (a replayed callback finds nothing)."""
        value: str | None = await self._write(lambda db: take_pending(db, f"login:{key}"))
        return value

    async def set(self, key: str, value: str, expires_in: int | None = None) -> None:
        """Keep an entry for the sign-in's lifetime."""
        await self._write(lambda db: put_pending(db, f"login:{key}", value, LOGIN_TTL_S))

    async def delete(self, key: str) -> None:
        """Drop an entry (already gone once read)."""
        await self._write(lambda db: take_pending(db, f"login:{key}"))


@dataclass(frozen=True, slots=True)
class Provider:
    """One provider people may sign in with: its name in URLs, its button's text, its kind."""

    name: str
    title: str
    kind: str  # "oidc" or "github"
    issuer: str | None = None

    def as_json(self) -> dict[str, str]:
        """What the page shows: `{"name", "title", "url"}`."""
        return {"name": self.name, "title": self.title, "url": f"/auth/login/{self.name}"}


class Providers:
    """The configured providers and their Authlib clients."""

    def __init__(self, settings: Settings, write: Write) -> None:
        """Authlib (with joserfc and cryptography, about 0.15 s of CPU) is imported only when
        at least one provider is configured: a server with none never loads it."""
        self.oauth: Any = None
        self.providers: dict[str, Provider] = {}
        if settings.oidc_providers() or settings.auth.github is not None:
            from authlib.integrations.starlette_client import OAuth

            self.oauth = OAuth(cache=PendingLogins(write))
        for name, config in settings.oidc_providers().items():
            self._add_oidc(name, config)
        if settings.auth.github is not None:
            self._add_github(settings.auth.github)

    def _add_oidc(self, name: str, config: OidcProviderConfig) -> None:
        issuer = config.issuer.rstrip("/")
        client_kwargs: dict[str, Any] = {
            "scope": " ".join(config.scopes),
            "code_challenge_method": "S256",
            "timeout": 15.0,
        }
        secret = config.client_secret.get_secret_value() if config.client_secret else None
        if secret is None:
            client_kwargs["token_endpoint_auth_method"] = "none"  # noqa: S105 - a public client
        self.oauth.register(
            name,
            client_id=config.client_id,
            client_secret=secret,
            server_metadata_url=f"{issuer}/.well-known/openid-configuration",
            client_kwargs=client_kwargs,
        )
        title = config.title or name.replace("_", " ").replace("-", " ").title()
        self.providers[name] = Provider(name, title, "oidc", issuer)

    def _add_github(self, config: GithubConfig) -> None:
        web = config.web_url.rstrip("/")
        self.oauth.register(
            "github",
            client_id=config.client_id,
            client_secret=config.client_secret.get_secret_value(),
            authorize_url=f"{web}/login/oauth/authorize",
            access_token_url=f"{web}/login/oauth/access_token",
            api_base_url=config.api_url.rstrip("/") + "/",
            client_kwargs={
                "scope": GITHUB_SCOPE,
                "code_challenge_method": "S256",
                "timeout": 15.0,
            },
        )
        self.providers["github"] = Provider("github", config.title, "github")

    def client(self, name: str) -> Any:
        """The Authlib client of provider `name` (a StarletteOAuth2App)."""
        return self.oauth.create_client(name)

    def claims_options(self, provider: Provider) -> dict[str, Any]:
        """The id_token's issuer must be the configured one, not only what discovery said, and
        its audience must include this server's client id (an `azp` naming it is not enough)."""
        assert provider.issuer is not None
        client_id = self.client(provider.name).client_id
        return {
            "iss": {"essential": True, "values": [provider.issuer, provider.issuer + "/"]},
            "aud": {"essential": True, "values": [client_id]},
        }


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def oidc_profile(provider: str, claims: dict[str, Any]) -> Profile:
    """The user an id_token's (checked) claims describe; the email counts as verified only
    when `email_verified` is the JSON `true`."""
    return Profile(
        provider=provider,
        subject=str(claims["sub"]),
        email=_text(claims.get("email")),
        email_verified=claims.get("email_verified") is True,
        username=_text(claims.get("preferred_username")),
        name=_text(claims.get("name")),
    )


async def github_profile(client: Any, token: dict[str, Any]) -> Profile:
    """The GitHub user behind an access token, with a verified email of theirs (the primary
    one first) or none: the profile's own email is not known to be verified."""
    user = (await client.get("user", token=token)).raise_for_status().json()
    email: str | None = None
    emails = await client.get("user/emails", token=token)
    if emails.status_code == 200 and isinstance(listed := emails.json(), list):
        verified = [
            entry["email"]
            for entry in sorted(
                (e for e in listed if isinstance(e, dict)),
                key=lambda e: e.get("primary") is not True,
            )
            if entry.get("verified") is True and isinstance(entry.get("email"), str)
        ]
        email = verified[0] if verified else None
    return Profile(
        provider="github",
        subject=str(user["id"]),
        email=email,
        email_verified=email is not None,
        username=_text(user.get("login")),
        name=_text(user.get("name")),
    )
