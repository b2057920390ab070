"""Who is calling: the bearer token of every request, checked before any route runs.

`Authorization: Bearer TOKEN` works everywhere; `?token=` only on the event-stream routes and
the audio WebSocket, because EventSource and a browser's WebSocket cannot send headers (the page
itself is public: it holds no data and reads the token from its own URL). A request with no
token may carry the sign-in cookie `vs_session` instead (voicestack/http/signin_auth.py: its
writes need X-CSRF-Token). The identity is put in the ASGI scope, where handlers find it with
`voicestack.http.state.caller`. Twilio cannot send our tokens at all: its webhook and media
stream take none and check their callers themselves (SELF_CHECKED_PATHS).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from voicestack import jsoncodec
from voicestack.http.errors import error_response
from voicestack.http.signin_auth import (
    DAY_S,
    check_cookie,
    is_secure,
    session_cookie,
    session_cookie_headers,
    with_cookies,
)
from voicestack.reactive.access import AccessGuard

PUBLIC_PATHS = frozenset({"/", "/healthz", "/openapi.json", "/favicon.ico"})
# Twilio's routes check their callers themselves: the webhook by its X-Twilio-Signature, the
# media stream by the one-time token of the TwiML (voicestack/http/twilio.py), and the start of
# a call an edge runs by its coming from an edge (voicestack/http/twilio_edge.py).
SELF_CHECKED_PATHS = frozenset({"/twilio/voice", "/twilio/stream", "/twilio/stream/start"})
SELF_CHECKED_SOCKETS = frozenset({"/twilio/stream"})
# Sign-in's routes (voicestack/http/signin*.py) are for people who have no credential yet.
PUBLIC_PREFIXES = ("/web/", "/auth/")
_STREAM_PATH = re.compile(r"^/api/(watch(/[^/]+)?|threads/[^/]+/events)$")
# The WebSocket routes: a browser's WebSocket cannot send headers either.
SOCKET_PATH = re.compile(r"^/api/threads/[^/]+/audio$")
CALLER_KEY = "voicestack.caller"
IDENTITY_KEY = "voicestack.identity"
# The access guard's generation when the token was checked (see AccessGuard.watch).
CHECKED_AT_KEY = "voicestack.checked_at"


def is_public(path: str) -> bool:
    """True for routes that take no token: health, the page and its static files, and the
    routes that check their callers themselves (Twilio's)."""
    return path in PUBLIC_PATHS or path in SELF_CHECKED_PATHS or path.startswith(PUBLIC_PREFIXES)


def accepts_query_token(method: str, path: str) -> bool:
    """True where `?token=` is accepted: GET on an event stream."""
    return method == "GET" and bool(_STREAM_PATH.match(path))


def presented_token(scope: Scope) -> tuple[str | None, str | None]:
    """(token, problem): the token the request carries, or why what it carries is unusable."""
    header = _authorization(scope)
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, "The Authorization header must be `Bearer TOKEN`."
        return token.strip(), None
    query = scope.get("query_string", b"").decode("latin-1")
    tokens = [value for name, value in parse_qsl(query) if name == "token"]
    if tokens:
        socket = scope["type"] == "websocket" and bool(SOCKET_PATH.match(scope["path"]))
        if not socket and not accepts_query_token(scope["method"], scope["path"]):
            return None, "?token= is accepted only on event streams; send `Authorization: Bearer`."
        return tokens[-1], None
    return None, None


def _authorization(scope: Scope) -> str | None:
    """The first Authorization header, as Starlette's Headers would read it (ASGI servers send
    header names in lower case), without building the Headers on every request."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


class Authenticate:
    """ASGI middleware: a request to a non-public route needs a valid token, or gets a 401."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "lifespan"
            or (scope["type"] == "http" and is_public(scope["path"]))
            or (scope["type"] == "websocket" and scope["path"] in SELF_CHECKED_SOCKETS)
        ):
            await self.app(scope, receive, send)
            return
        socket = scope["type"] == "websocket"
        if scope["type"] != "http" and not (socket and SOCKET_PATH.match(scope["path"])):
            # Only the audio socket speaks WebSocket; refuse any other here.
            await send({"type": "websocket.close", "code": 1008})
            return
        token, problem = presented_token(scope)
        secret = session_cookie(scope) if token is None and problem is None else None
        if secret is not None:
            await self._signed_in(scope, receive, send, secret)
            return
        if token is None:
            message = problem or "This route needs a token: send `Authorization: Bearer TOKEN`."
            refusal = _socket_refusal if socket else _unauthorized
            await refusal("unauthorized", message)(scope, receive, send)
            return
        guard: AccessGuard = scope["app"].state.runtime.access
        checked_at = guard.generation
        identity = await guard.identify(token)
        if identity is None:
            message = "The token is not valid: it is unknown or has been revoked."
            refusal = _socket_refusal if socket else _unauthorized
            await refusal("invalid_token", message)(scope, receive, send)
            return
        scope[IDENTITY_KEY] = identity
        scope[CALLER_KEY] = identity.caller
        scope[CHECKED_AT_KEY] = checked_at
        await self.app(scope, receive, send)

    async def _signed_in(self, scope: Scope, receive: Receive, send: Send, secret: str) -> None:
        """A request with no token but the sign-in cookie (voicestack/http/signin_auth.py)."""
        runtime = scope["app"].state.runtime
        guard: AccessGuard = runtime.access
        checked_at = guard.generation
        settings = runtime.settings
        check = await check_cookie(scope, secret, guard, settings.session_days, runtime.store.write)
        if check.identity is None:
            if scope["type"] == "websocket":
                await _socket_refusal(check.code, check.message)(scope, receive, send)
            elif check.status == 401:
                await _unauthorized(check.code, check.message)(scope, receive, send)
            else:
                await error_response(check.status, check.code, check.message)(scope, receive, send)
            return
        scope[IDENTITY_KEY] = check.identity
        scope[CALLER_KEY] = check.identity.caller
        scope[CHECKED_AT_KEY] = checked_at
        if check.renewed is not None and scope["type"] == "http":
            secure = is_secure(scope, settings.public_url)
            lifetime = settings.session_days * DAY_S
            send = with_cookies(send, session_cookie_headers(check.renewed, lifetime, secure))
        await self.app(scope, receive, send)


def _unauthorized(code: str, message: str) -> Response:
    response = error_response(401, code, message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="voicestack"'
    return response


def _socket_refusal(code: str, message: str) -> ASGIApp:
    """A WebSocket refused for its token: accepted, told why, and closed with code 4401."""

    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        error = {"type": "error", "code": code, "message": message}
        await send({"type": "websocket.send", "text": jsoncodec.dumps(error).decode()})
        await send({"type": "websocket.close", "code": 4401, "reason": code})

    return refuse
