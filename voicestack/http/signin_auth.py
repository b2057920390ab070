"""The sign-in cookie as a credential: `vs_session` identifies the caller where no token is sent,
and a write it authenticates must carry `X-CSRF-Token` equal to the `vs_csrf` cookie.

A browser sends cookies with requests other sites make it send; a bearer token it never sends
by itself, so bearer calls need no CSRF check. The audio WebSocket cannot carry the header: a
socket opened with the cookie must come from a page of this server (its Origin).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import Message, Scope, Send

from voicestack.auth.sessions import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    SessionLookup,
    csrf_value,
    needs_renewal,
    renew_session,
)
from voicestack.auth.users import Identity
from voicestack.reactive.access import AccessGuard
from voicestack.store.db import WriteDB

# The runtime's write (`Store.write` returning the value), passed in: no Runtime import here.
WriteSession = Callable[[Callable[[WriteDB], Any]], Awaitable[Any]]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class CookieCheck:
    """What the cookie says: the identity, or a refusal (status, code, message)."""

    identity: Identity | None = None
    status: int = 401
    code: str = ""
    message: str = ""
    # Set when the session's expiry slid forward: the response renews the cookies.
    renewed: str | None = None


def request_cookies(scope: Scope) -> dict[str, str]:
    """The request's cookies by name (a malformed Cookie header gives none)."""
    header = Headers(scope=scope).get("cookie")
    if not header:
        return {}
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # a malformed header is as good as none
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def session_cookie(scope: Scope) -> str | None:
    """The `vs_session` cookie of the request, if it sends one."""
    return request_cookies(scope).get(SESSION_COOKIE) or None


def is_secure(scope: Scope, public_url: str | None) -> bool:
    """True when the browser reaches this server over https (its cookies are then Secure)."""
    if public_url is not None:
        return public_url.startswith("https://")
    return scope.get("scheme") in ("https", "wss")


def session_cookie_headers(
    secret: str | None, lifetime_s: float, secure: bool
) -> list[tuple[bytes, bytes]]:
    """Set-Cookie headers that set (or, with None, clear) `vs_session` and `vs_csrf`."""
    flags = "; Path=/; SameSite=Lax" + ("; Secure" if secure else "")
    if secret is None:
        expired = "=; Max-Age=0" + flags
        return [
            (b"set-cookie", f"{SESSION_COOKIE}{expired}; HttpOnly".encode()),
            (b"set-cookie", f"{CSRF_COOKIE}{expired}".encode()),
        ]
    age = f"; Max-Age={int(lifetime_s)}"
    return [
        (b"set-cookie", f"{SESSION_COOKIE}={secret}{age}{flags}; HttpOnly".encode()),
        (b"set-cookie", f"{CSRF_COOKIE}={csrf_value(secret)}{age}{flags}".encode()),
    ]


def same_origin(scope: Scope) -> bool:
    """Whether the request's Origin is this server's own (its Host)."""
    headers = Headers(scope=scope)
    origin, host = headers.get("origin"), headers.get("host")
    return origin is not None and host is not None and urlsplit(origin).netloc == host


def csrf_ok(scope: Scope, secret: str) -> bool:
    """True when the request's X-CSRF-Token header and vs_csrf cookie both match the session."""
    header = Headers(scope=scope).get(CSRF_HEADER, "")
    cookie = request_cookies(scope).get(CSRF_COOKIE, "")
    expected = csrf_value(secret)
    return hmac.compare_digest(header, expected) and hmac.compare_digest(cookie, expected)


async def check_cookie(
    scope: Scope, secret: str, guard: AccessGuard, session_days: float, write: WriteSession
) -> CookieCheck:
    """Identify the caller by their session cookie, refusing an ended session (401), a write
    without the CSRF header (403 csrf_failed) and a socket from another origin (403)."""
    lookup: SessionLookup | None = await guard.identify_session(secret)
    if lookup is None:
        return CookieCheck(
            code="session_ended", message="Your sign-in has ended: sign in again on the page."
        )
    if scope["type"] == "websocket":
        if not same_origin(scope):
            return CookieCheck(
                status=403,
                code="csrf_failed",
                message="A socket signed in by cookie must come from this server's page.",
            )
    elif scope["method"] not in SAFE_METHODS and not csrf_ok(scope, secret):
        return CookieCheck(
            status=403,
            code="csrf_failed",
            message="This request is signed in by cookie: send the vs_csrf cookie's value"
            " as the X-CSRF-Token header.",
        )
    lifetime = session_days * DAY_S
    renewed = None
    if needs_renewal(lookup, lifetime, time.time()):
        session_id = lookup.identity.token_id
        await write(lambda db: renew_session(db, session_id, lifetime))
        renewed = secret
    return CookieCheck(identity=lookup.identity, renewed=renewed)


def with_cookies(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    """`send` that adds `headers` to the response's start."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *headers]}
        await send(message)

    return sending
