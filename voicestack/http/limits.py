"""Per-token limits: event streams and live conversations open at once, and rates of
mutations, replies and `/voice`.

A request over a limit gets 429 with an integer `Retry-After` header and the same seconds as
`retryAfter` in the JSON error. Rates are token buckets: a token may spend up to a minute's
allowance at once, which then refills evenly over the minute. Every count lives in the memory
of one server process: with `--workers N` each process keeps its own, so a token may reach up
to N times a limit; a restart forgets them.

Admins are limited like everyone else; a setting of 0 switches its limit off (benchmarks).
"""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from voicestack import jsoncodec
from voicestack.auth.users import Identity
from voicestack.config import Settings
from voicestack.http.auth import IDENTITY_KEY
from voicestack.http.errors import error_response
from voicestack.http.sse import STREAM_RELEASE_KEY, StreamRelease
from voicestack.http.state import CATCH_UP_HEADER, FROM_EDGE_KEY, MEMBER_HEADER, SHARE_HEADER

# Nothing tells when another stream closes: a client should look again after a few seconds.
STREAM_RETRY_AFTER_S = 5

_STREAM = re.compile(r"/api/(watch(/[^/]+)?|threads/[^/]+/events)")
# Live conversations (WebSockets) count as streams too.
_SOCKET = re.compile(r"/api/threads/[^/]+/audio")
_SOCKET_RECORDS = re.compile(r"/api/threads/[^/]+/audio/.+")  # voicestack/http/voice_records.py
_REPLY_FUNCTION = "messages.send"


def _edge_feed_work(scope: Scope) -> bool:
    """An edge's shared thread stream, or a client's catch-up or joining of one: not a stream
    of the token it carries (the edge holds each token to its stream limit itself)."""
    if not scope.get(FROM_EDGE_KEY):
        return False
    names = {name for name, _ in scope["headers"]}
    shared_stream = SHARE_HEADER.encode() in names and MEMBER_HEADER.encode() not in names
    return shared_stream or CATCH_UP_HEADER.encode() in names


@dataclass(slots=True)
class TokenBucket:
    """Up to `capacity` requests at once, refilled at `capacity` per minute."""

    capacity: float
    level: float
    updated: float

    def wait(self, now: float) -> float:
        """Seconds until one request may pass (0: now), after refilling up to `now`."""
        rate = self.capacity / 60.0
        self.level = min(self.capacity, self.level + (now - self.updated) * rate)
        self.updated = now
        return 0.0 if self.level >= 1.0 else (1.0 - self.level) / rate

    def take(self) -> None:
        """Spend one request (after `wait` said 0)."""
        self.level -= 1.0


@dataclass(slots=True)
class Rate:
    """One kind of rate-limited request: its name in messages and each token's bucket."""

    what: str
    per_min: int
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def bucket(self, token_id: str, now: float) -> TokenBucket:
        """The bucket of `token_id`, full when first used."""
        bucket = self.buckets.get(token_id)
        if bucket is None:
            bucket = self.buckets[token_id] = TokenBucket(self.per_min, self.per_min, now)
        return bucket


class RequestRates:
    """Each token's rate buckets: mutations, replies and `/voice` requests (0 in the settings:
    that rate is off). One object serves every way into the API (RequestLimits, FastLane)."""

    def __init__(self, settings: Settings) -> None:
        mutations = Rate("mutations", settings.rate_mutations_per_min)
        replies = Rate("replies", settings.rate_replies_per_min)
        voice = Rate("voice requests", settings.rate_voice_per_min)

        def active(*rates: Rate) -> tuple[Rate, ...]:
            return tuple(rate for rate in rates if rate.per_min > 0)

        self.mutation_rates = active(mutations)
        self.reply_rates = active(mutations, replies)
        self.voice_rates = active(voice, replies)

    def rates_of(self, method: str, path: str) -> tuple[Rate, ...]:
        """The rates a request spends: none for reads and anything not POST."""
        if method != "POST":
            return ()
        if path.startswith("/api/mutation/"):
            name = path[len("/api/mutation/") :]
            return self.reply_rates if name == _REPLY_FUNCTION else self.mutation_rates
        if path.startswith("/api/action/"):
            return self.mutation_rates
        if path == "/voice":
            return self.voice_rates
        if _SOCKET_RECORDS.fullmatch(path):
            return ()  # a live conversation's, on an edge: spends nothing, as on one server
        if path == "/api/threads" or path.startswith("/api/threads/"):
            return self.reply_rates if path.endswith("/messages") else self.mutation_rates
        return ()

    def admit(self, token_id: str, method: str, path: str) -> Response | None:
        """Spend one of each rate the request spends and return None; or, when one of them is
        used up, spend nothing and return the 429 refusal, with its Retry-After."""
        rates = self.rates_of(method, path)
        if not rates:
            return None
        now = time.monotonic()
        buckets = [rate.bucket(token_id, now) for rate in rates]
        waits = [bucket.wait(now) for bucket in buckets]
        longest = max(waits)
        if longest > 0:
            rate = rates[waits.index(longest)]
            seconds = max(1, math.ceil(longest))
            message = (
                f"Too many {rate.what} with this token: at most {rate.per_min} a minute."
                f" Try again in {seconds} s."
            )
            return _refusal("rate_limited", message, seconds)
        for bucket in buckets:
            bucket.take()
        return None


class RequestLimits:
    """ASGI middleware (inside Authenticate, which names the token): refuses with 429 what is
    over a per-token limit and counts each token's open event streams. `rates`: the buckets
    it shares with the other ways into the API (its own when None)."""

    def __init__(self, app: ASGIApp, settings: Settings, rates: RequestRates | None = None) -> None:
        self.app = app
        self.max_streams = settings.max_streams_per_token
        self.open_streams: defaultdict[str, int] = defaultdict(int)
        self.rates = rates if rates is not None else RequestRates(settings)

    def rates_of(self, method: str, path: str) -> tuple[Rate, ...]:
        """The rates a request spends: none for reads and anything not POST."""
        return self.rates.rates_of(method, path)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Each way hands back the awaitable that serves the request, not awaiting it in a frame
        # of this layer (see voicestack/http/middleware.py).
        who: Identity | None = scope.get(IDENTITY_KEY)
        if who is None:  # public routes, and anything that is not HTTP
            return self.app(scope, receive, send)
        if scope["type"] == "websocket":
            if self.max_streams and _SOCKET.fullmatch(scope["path"]):
                return self._stream(who.token_id, scope, receive, send)
            return self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        if (
            method in ("GET", "HEAD")
            and self.max_streams
            and _STREAM.fullmatch(path)
            and not _edge_feed_work(scope)
        ):
            return self._stream(who.token_id, scope, receive, send)
        refusal = self.rates.admit(who.token_id, method, path)
        if refusal is not None:
            return refusal(scope, receive, send)
        return self.app(scope, receive, send)

    async def _stream(self, token_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        if self.open_streams[token_id] >= self.max_streams:
            message = (
                f"This token already has {self.max_streams} event streams open, the most it"
                " may: close one first."
            )
            if scope["type"] == "websocket":
                await _socket_refusal(message, receive, send)
            else:
                await _refusal("too_many_streams", message, STREAM_RETRY_AFTER_S)(
                    scope, receive, send
                )
            return
        self.open_streams[token_id] += 1

        def release() -> None:
            self.open_streams[token_id] -= 1
            if not self.open_streams[token_id]:
                del self.open_streams[token_id]

        # A stream's response returns once the stream has ended, or, detached, keeps the
        # release and calls it when the stream ends.
        scope[STREAM_RELEASE_KEY] = handoff = StreamRelease(release)
        try:
            await self.app(scope, receive, send)
        finally:
            if not handoff.kept:
                handoff()


def _refusal(code: str, message: str, seconds: int) -> Response:
    response = error_response(429, code, message, retryAfter=seconds)
    response.headers["Retry-After"] = str(seconds)
    return response


async def _socket_refusal(message: str, receive: Receive, send: Send) -> None:
    """A WebSocket over the stream limit: accepted, told why, and closed with code 4429."""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    error = {"type": "error", "code": "too_many_streams", "message": message}
    await send({"type": "websocket.send", "text": jsoncodec.dumps(error).decode()})
    await send({"type": "websocket.close", "code": 4429, "reason": "too_many_streams"})
