"""The edge's application: the public API with no database file.

Streams (query watches and thread feeds) are served here, from upstreams shared by every
client of this edge that watches the same thing; every other request is forwarded whole to a
primary over NATS and answered with the primary's response. With no primary or no NATS, the
streams stay open and requests are answered 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from voicestack import __version__, jsoncodec
from voicestack.config import Settings
from voicestack.http.errors import CatchAll
from voicestack.http.limits import STREAM_RETRY_AFTER_S
from voicestack.http.sse import ChannelResponse
from voicestack.http.state import CATCH_UP_HEADER, CURSOR_HEADER
from voicestack.http.watch import last_event_id
from voicestack.reactive.channel import FeedChannel, Outbox
from voicestack.reactive.keepalive import Streams
from voicestack.reactive.streams import Stream
from voicestack.scale.edge_sockets import SocketRelay, socket_request
from voicestack.scale.envelope import RequestEnvelope, ResponseEnvelope
from voicestack.scale.errors import error_envelope
from voicestack.scale.link import EdgeLink, PrimaryUnavailable
from voicestack.scale.upstream import FeedUpstream, RelayChannel, Upstream, WatchUpstream

log = logging.getLogger(__name__)

# Not passed on: hop-by-hop headers, and what the edge handles itself on streams.
_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"upgrade",
    b"te",
    b"trailer",
    b"proxy-authorization",
    b"proxy-connection",
}
_STREAM_ONLY = {b"last-event-id", b"accept-encoding"}
# The primary's stream headers the edge's own stream response does not repeat.
_OWN_STREAM_HEADERS = {
    b"content-type",
    b"cache-control",
    b"connection",
    b"content-length",
    b"transfer-encoding",
    b"content-encoding",
    b"vary",
    b"x-accel-buffering",
}
_CLIENT_ONLY_PARAMS = {"token", "lastEventId", "since"}
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class Edge:
    """What the edge's routes share: the NATS link, the upstreams by key, the open streams."""

    def __init__(self, settings: Settings) -> None:
        assert settings.nats is not None, "an edge needs --nats"
        self.settings = settings
        self.link = EdgeLink(settings.nats)
        self.streams = Streams(settings.ping_s, settings.send_timeout_s)
        self.upstreams: dict[str, Upstream] = {}
        self._opening: dict[str, asyncio.Future[Upstream]] = {}
        # Streams open per credential, held to --max-streams-per-token as on a single server.
        self.open_streams: collections.Counter[str] = collections.Counter()
        self._keepalive: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Link to NATS and keep the streams alive."""
        await self.link.start()
        self._keepalive = asyncio.get_running_loop().create_task(self.streams.run())

    def begin_shutdown(self) -> None:
        """A shutdown signal arrived: end every stream (clients reconnect to another edge)."""
        self.streams.close_all()

    async def voice_sessions_ended(self) -> None:
        """Nothing to wait for: live conversations are not served by edges."""

    async def close(self) -> None:
        """End every stream and leave NATS."""
        for upstream in list(self.upstreams.values()):
            upstream.close()
        if self._keepalive is not None:
            self._keepalive.cancel()
        await self.link.close()

    def forget(self, upstream: Upstream) -> None:
        """An upstream ended: the next client of its key opens a new one."""
        for key, known in list(self.upstreams.items()):
            if known is upstream:
                del self.upstreams[key]

    async def upstream(
        self, key: str, make: Callable[[], Awaitable[tuple[Upstream, ResponseEnvelope]]]
    ) -> tuple[Upstream | None, ResponseEnvelope | None]:
        """The open upstream of `key`, or a new one from `make()`: (upstream, None), or (None,
        the primary's refusal). Clients arriving together wait for one opening."""
        while True:
            known = self.upstreams.get(key)
            if known is not None and not known.closed:
                return known, None
            pending = self._opening.get(key)
            if pending is None:
                break
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
        future: asyncio.Future[Upstream] = asyncio.get_running_loop().create_future()
        self._opening[key] = future
        try:
            upstream, head = await make()
            if head.status != 200:
                future.set_exception(PrimaryUnavailable("refused"))
                future.exception()  # retrieved: waiters retry and get their own answer
                return None, head
            self.upstreams[key] = upstream
            future.set_result(upstream)
            return upstream, None
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()
            raise
        finally:
            self._opening.pop(key, None)


def _edge(request: Request) -> Edge:
    edge: Edge = request.app.state.edge
    return edge


def _as_response(envelope: ResponseEnvelope) -> Response:
    headers = [(n, v) for n, v in envelope.headers if n.lower() not in _HOP_BY_HOP]
    response = Response(envelope.body, envelope.status)
    response.raw_headers = [
        *[(n, v) for n, v in headers if n.lower() != b"content-length"],
        (b"content-length", str(len(envelope.body)).encode()),
    ]
    return response


def _unavailable(why: str) -> Response:
    return _as_response(
        error_envelope(503, "primary_unavailable", f"No primary is reachable now ({why}).")
    )


def _forwarded(request: Request, body: bytes, drop: set[bytes] | None = None) -> RequestEnvelope:
    dropped = _HOP_BY_HOP | (drop or set())
    headers = [(n, v) for n, v in request.scope["headers"] if n.lower() not in dropped]
    client = request.scope.get("client")
    return RequestEnvelope(
        method=request.method,
        path=request.url.path,
        query_string=request.scope.get("query_string", b""),
        headers=headers,
        body=body,
        client=(str(client[0]), int(client[1])) if client else None,
    )


async def forward(request: Request) -> Response:
    """Any route the edge does not serve itself: the primary's response to the same request."""
    edge = _edge(request)
    limit = edge.link.max_payload() - 64 * 1024
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return _as_response(
                error_envelope(413, "body_too_large", f"Bodies over {limit} bytes are refused.")
            )
        chunks.append(chunk)
    try:
        answer = await edge.link.call(_forwarded(request, b"".join(chunks)))
    except PrimaryUnavailable as exc:
        return _unavailable(str(exc))
    return _as_response(answer)


def _stream_opening(request: Request, query: list[tuple[str, str]]) -> RequestEnvelope:
    """The request that opens a stream for this client's credentials, whatever its cursor."""
    opening = _forwarded(request, b"", _STREAM_ONLY)
    token = request.query_params.get("token")
    if token and not any(n.lower() == b"authorization" for n, _ in opening.headers):
        opening.headers.append((b"authorization", b"Bearer " + token.encode("latin-1")))
    opening.query_string = urlencode(query).encode()
    return opening


def _credential(opening: RequestEnvelope) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(opening.headers):
        if name.lower() in (b"authorization", b"cookie"):
            digest.update(b"\0%s:%s" % (name.lower(), value))
    return digest.hexdigest()


def _key(kind: str, opening: RequestEnvelope) -> str:
    digest = hashlib.sha256(b"%s\0%s\0" % (kind.encode(), opening.path.encode()))
    digest.update(opening.query_string + b"\0" + _credential(opening).encode())
    return digest.hexdigest()


def _over_stream_limit(edge: Edge, opening: RequestEnvelope) -> Response | None:
    """429 when this credential already holds --max-streams-per-token streams on this edge."""
    limit = edge.settings.max_streams_per_token
    if limit and edge.open_streams[_credential(opening)] >= limit:
        refusal = error_envelope(
            429,
            "too_many_streams",
            f"This token already has {limit} event streams open, the most it may: close one first.",
        )
        refusal.headers.append((b"retry-after", str(STREAM_RETRY_AFTER_S).encode()))
        return _as_response(refusal)
    return None


def _stream_response(
    edge: Edge,
    upstream: Upstream,
    opening: RequestEnvelope,
    outbox: Outbox,
    leave: Callable[[], None],
) -> ChannelResponse:
    credential = _credential(opening)
    edge.open_streams[credential] += 1

    def release() -> None:
        leave()
        edge.streams.discard(outbox)
        edge.open_streams[credential] -= 1
        if edge.open_streams[credential] <= 0:
            del edge.open_streams[credential]

    response = ChannelResponse(Stream(outbox, release))
    response.headers += [
        (n, v) for n, v in upstream.head.headers if n.lower() not in _OWN_STREAM_HEADERS
    ]
    return response


async def watch(request: Request) -> Response | ChannelResponse:
    """GET /api/watch and /api/watch/{name}: the query values, from this edge's upstream."""
    edge = _edge(request)
    multi = request.url.path == "/api/watch"
    params = [(k, v) for k, v in parse_qsl(request.url.query) if k not in _CLIENT_ONLY_PARAMS]
    opening = _stream_opening(request, sorted(params))
    if (too_many := _over_stream_limit(edge, opening)) is not None:
        return too_many
    key = _key("watch", opening)

    async def make() -> tuple[Upstream, ResponseEnvelope]:
        upstream = WatchUpstream(edge.link, opening, edge.forget, multi)
        return upstream, await upstream.open()

    try:
        upstream, refusal = await edge.upstream(key, make)
    except PrimaryUnavailable as exc:
        return _unavailable(str(exc))
    if upstream is None:
        assert refusal is not None
        return _as_response(refusal)
    assert isinstance(upstream, WatchUpstream)
    outbox = RelayChannel()
    edge.streams.add(outbox)
    upstream.join(outbox, last_event_id(request))
    return _stream_response(edge, upstream, opening, outbox, lambda: upstream.leave(outbox))


async def thread_events(request: Request) -> Response | ChannelResponse:
    """GET /api/threads/{id}/events: the client's catch-up from a primary, then the thread's
    events from this edge's upstream."""
    edge = _edge(request)
    resumed = last_event_id(request)
    since = request.query_params.get("since")
    cursor = resumed if resumed is not None else since
    catch_up = _stream_opening(request, [] if cursor is None else [("since", str(cursor))])
    catch_up.headers.append((CATCH_UP_HEADER.encode(), b"1"))
    if (too_many := _over_stream_limit(edge, catch_up)) is not None:
        return too_many
    try:
        answer = await edge.link.call(catch_up)
    except PrimaryUnavailable as exc:
        return _unavailable(str(exc))
    if answer.status != 200:
        return _as_response(answer)
    after = int(answer.header(CURSOR_HEADER.encode()) or b"0")
    opening = _stream_opening(request, [])
    key = _key("feed", opening)

    async def make() -> tuple[Upstream, ResponseEnvelope]:
        upstream = FeedUpstream(edge.link, opening, edge.forget, after)
        return upstream, await upstream.open()

    try:
        upstream, refusal = await edge.upstream(key, make)
    except PrimaryUnavailable as exc:
        return _unavailable(str(exc))
    if upstream is None:
        assert refusal is not None
        return _as_response(refusal)
    assert isinstance(upstream, FeedUpstream)
    outbox = FeedChannel()
    edge.streams.add(outbox)
    upstream.join(outbox, answer.body, after)
    return _stream_response(edge, upstream, opening, outbox, lambda: upstream.leave(outbox))


async def healthz(request: Request) -> Response:
    """GET /healthz: this edge is alive; `nats` says whether it reaches NATS now."""
    edge = _edge(request)
    body = {"ok": True, "version": __version__, "role": "edge", "nats": edge.link.connected}
    return Response(jsoncodec.dumps(body), media_type="application/json")


async def relay_socket(websocket: WebSocket) -> None:
    """The live-conversation socket and Twilio's media stream: relayed to a primary."""
    edge: Edge = websocket.app.state.edge
    await SocketRelay(edge.link, websocket).run(socket_request(websocket))


def create_edge_app(settings: Settings) -> Starlette:
    """The edge's ASGI app: streams from NATS, everything else forwarded to a primary."""
    edge = Edge(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.edge = edge
        app.state.runtime = edge  # the server's shutdown ends streams through it
        await edge.start()
        log.info("edge %s serving (no database file)", edge.link.id)
        try:
            yield
        finally:
            await edge.close()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/api/watch", watch, methods=["GET"]),
        Route("/api/watch/{name}", watch, methods=["GET"]),
        Route("/api/threads/{thread_id}/events", thread_events, methods=["GET"]),
        WebSocketRoute("/api/threads/{thread_id}/audio", relay_socket),
        WebSocketRoute("/twilio/stream", relay_socket),
        Route("/{path:path}", forward, methods=_METHODS),
    ]
    return Starlette(routes=routes, middleware=[Middleware(CatchAll)], lifespan=lifespan)
