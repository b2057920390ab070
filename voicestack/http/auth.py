"""Who is calling: the bearer token of every request, checked before any route runs.

`Authorization: Bearer TOKEN` works everywhere; `?token=` only on the event-stream routes and
the audio WebSocket, because EventSource and a browser's WebSocket cannot send headers (the page
itself is public: it holds no data and reads the token from its own URL). The identity is put
in the ASGI scope, where handlers find it with `voicestack.http.state.caller`. Twilio cannot
send our tokens at all: its webhook and media stream take none and check their callers
themselves (SELF_CHECKED_PATHS).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from voicestack import jsoncodec
from voicestack.http.errors import error_response
from voicestack.reactive.access import AccessGuard

PUBLIC_PATHS = frozenset({"/", "/healthz", "/openapi.json", "/favicon.ico"})
# Twilio's routes check their callers themselves: the webhook by its X-Twilio-Signature, the
# media stream by the one-time token of the TwiML (voicestack/http/twilio.py).
SELF_CHECKED_PATHS = frozenset({"/twilio/voice", "/twilio/stream"})
PUBLIC_PREFIXES = ("/web/",)
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
    header = Headers(scope=scope).get("authorization")
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


class Authenticate:
    """ASGI middleware: a request to a non-public route needs a valid token, or gets a 401."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "lifespan"
            or (scope["type"] == "http" and is_public(scope["path"]))
            or (scope["type"] == "websocket" and scope["path"] in SELF_CHECKED_PATHS)
        ):
            await self.app(scope, receive, send)
            return
        socket = scope["type"] == "websocket"
        if scope["type"] != "http" and not (socket and SOCKET_PATH.match(scope["path"])):
            # Only the audio socket speaks WebSocket; refuse any other here.
            await send({"type": "websocket.close", "code": 1008})
            return
        token, problem = presented_token(scope)
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
