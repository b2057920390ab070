"""An edge's event streams: query watches and thread feeds served from shared upstreams.

Clients with the same credentials watching the same thing share one upstream (one stream on a
primary); each client still gets what it alone is owed: the current values newer than its
Last-Event-ID, or its own catch-up of a thread, before the shared events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import Response

from voicestack import jsoncodec
from voicestack.http.body import parse_int64
from voicestack.http.limits import STREAM_RETRY_AFTER_S
from voicestack.http.sse import ChannelResponse
from voicestack.http.state import CATCH_UP_HEADER, CURSOR_HEADER
from voicestack.http.watch import last_event_id
from voicestack.reactive.channel import FeedChannel, Outbox
from voicestack.reactive.streams import Stream
from voicestack.scale.edge import Edge
from voicestack.scale.edge_http import as_response, forward, forwarded, relayed_headers, unavailable
from voicestack.scale.envelope import Headers, RequestEnvelope, ResponseEnvelope
from voicestack.scale.errors import error_envelope
from voicestack.scale.link import PrimaryUnavailable
from voicestack.scale.upstream import FeedUpstream, RelayChannel, Upstream, WatchUpstream

_STREAM_ONLY = frozenset({b"last-event-id", b"accept-encoding"})
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
    # The upstream's opener's cookie, renewed: each client gets its own answer's (below).
    b"set-cookie",
}
_CLIENT_ONLY_PARAMS = {"token", "lastEventId", "since"}
# Catch-ups a feed client may need before it reaches its upstream's events (each one ends
# at a newer snapshot; two are already rare).
_MAX_CATCH_UPS = 5


class BadToken(Exception):
    """A `?token=` that cannot be any token (not latin-1): 401, as a single server answers."""


def _stream_opening(request: Request, query: list[tuple[str, str]]) -> RequestEnvelope:
    """The request that opens a stream for this client's credentials, whatever its cursor."""
    opening = forwarded(request, b"", _STREAM_ONLY)
    token = request.query_params.get("token")
    if token and not _bearer(opening):
        try:
            opening.headers.append((b"authorization", b"Bearer " + token.encode("latin-1")))
        except UnicodeEncodeError:
            raise BadToken from None
    opening.query_string = urlencode(query).encode()
    return opening


def _credential(opening: RequestEnvelope) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(opening.headers):
        if name.lower() in (b"authorization", b"cookie"):
            digest.update(b"\0%s:%s" % (name.lower(), value))
    return digest.hexdigest()


def _key(kind: str, opening: RequestEnvelope, params: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256(b"%s\0%s\0" % (kind.encode(), opening.path.encode()))
    digest.update(jsoncodec.dumps(sorted(params)) + b"\0" + _credential(opening).encode())
    return digest.hexdigest()


def _too_many(edge: Edge) -> Response:
    limit = edge.settings.max_streams_per_token
    refusal = error_envelope(
        429,
        "too_many_streams",
        f"This token already has {limit} event streams open, the most it may: close one first.",
        retryAfter=STREAM_RETRY_AFTER_S,
    )
    refusal.headers.append((b"retry-after", str(STREAM_RETRY_AFTER_S).encode()))
    return as_response(refusal)


def _unauthorized() -> Response:
    return as_response(
        error_envelope(401, "unauthorized", "The token is not valid: it was never issued.")
    )


def _cookies(answer: ResponseEnvelope) -> Headers:
    """The Set-Cookie headers of a primary's answer (a sign-in cookie it renewed)."""
    return [(n, v) for n, v in answer.headers if n.lower() == b"set-cookie"]


async def _cookie_check(edge: Edge, opening: RequestEnvelope) -> tuple[Headers, Response | None]:
    """A signed-in client joining a shared watch has its cookie judged, and renewed, by the
    primary, as its own opening would: (the Set-Cookie to send it, None), or (nothing, the
    primary's refusal). A bearer token needs nothing: the upstream of that very token is
    ended by the primary at the commit that revokes it."""
    if _bearer(opening):
        return [], None
    check = RequestEnvelope("GET", "/api/me", b"", list(opening.headers), client=opening.client)
    check.scheme = opening.scheme
    try:
        answer = await edge.link.call(check)
    except PrimaryUnavailable as exc:
        return [], unavailable(str(exc))
    if answer.status != 200:
        return [], as_response(answer)
    return _cookies(answer), None


def _stream_response(
    edge: Edge,
    upstream: Upstream,
    outbox: Outbox,
    release: Callable[[], None],
    cookies: Headers,
) -> ChannelResponse:
    edge.streams.add(outbox)

    def ended() -> None:
        release()
        edge.streams.discard(outbox)

    response = ChannelResponse(Stream(outbox, ended))
    response.headers += [
        (n, v)
        for n, v in relayed_headers(upstream.head.headers)
        if n.lower() not in _OWN_STREAM_HEADERS
    ]
    response.headers += cookies
    return response


async def _shared(
    edge: Edge, key: str, make: Callable[[], Upstream]
) -> tuple[Upstream | None, Response | None]:
    async def opened() -> tuple[Upstream, ResponseEnvelope]:
        upstream = make()
        return upstream, await upstream.open()

    try:
        upstream, refusal = await edge.upstream(key, opened)
    except PrimaryUnavailable as exc:
        return None, unavailable(str(exc))
    if upstream is None:
        assert refusal is not None
        return None, as_response(refusal)
    return upstream, None


async def watch(request: Request) -> Response | ChannelResponse:
    """GET /api/watch and /api/watch/{name}: the query values, from this edge's upstream."""
    if request.method == "HEAD":
        return await forward(request)
    edge: Edge = request.app.state.edge
    multi = request.url.path == "/api/watch"
    every = parse_qsl(request.url.query, keep_blank_values=True)
    params = [(k, v) for k, v in every if k not in _CLIENT_ONLY_PARAMS]
    try:
        opening = _stream_opening(request, params)
    except BadToken:
        return _unauthorized()
    cookies, refusal = await _cookie_check(edge, opening)
    if refusal is not None:
        return refusal
    credential = _credential(opening)
    if not edge.take_stream(credential):
        return _too_many(edge)
    try:
        key = _key("watch", opening, params)
        upstream, refusal = await _shared(
            edge, key, lambda: WatchUpstream(edge.link, opening, edge.forget, multi)
        )
    except BaseException:
        edge.give_back_stream(credential)
        raise
    if upstream is None:
        edge.give_back_stream(credential)
        assert refusal is not None
        return refusal
    assert isinstance(upstream, WatchUpstream)
    outbox = RelayChannel()
    upstream.join(outbox, last_event_id(request))

    def release() -> None:
        upstream.leave(outbox)
        edge.give_back_stream(credential)

    return _stream_response(edge, upstream, outbox, release, cookies)


async def _catch_up(
    edge: Edge, request: Request, cursor: str | int | None
) -> tuple[ResponseEnvelope, int]:
    """The primary's catch-up of a feed client at `cursor`: its answer and where it ends."""
    query = [] if cursor is None else [("since", str(cursor))]
    catch_up = _stream_opening(request, query)
    catch_up.headers.append((CATCH_UP_HEADER.encode(), b"1"))
    answer = await edge.link.call(catch_up)
    after = int(answer.header(CURSOR_HEADER.encode()) or b"0")
    return answer, after


async def thread_events(request: Request) -> Response | ChannelResponse:
    """GET /api/threads/{id}/events: the client's catch-up from a primary, then the thread's
    events from this edge's upstream."""
    if request.method == "HEAD":
        return await forward(request)
    edge: Edge = request.app.state.edge
    resumed = last_event_id(request)
    cursor = resumed if resumed is not None else request.query_params.get("since")
    try:
        opening = _stream_opening(request, [])
    except BadToken:
        return _unauthorized()
    credential = _credential(opening)
    if not edge.take_stream(credential):
        return _too_many(edge)
    try:
        outbox, upstream, cookies = await _join_feed(edge, request, opening, cursor)
    except BaseException:
        edge.give_back_stream(credential)
        raise
    if isinstance(upstream, Response):
        edge.give_back_stream(credential)
        return upstream
    assert outbox is not None

    def release() -> None:
        upstream.leave(outbox)
        edge.give_back_stream(credential)

    return _stream_response(edge, upstream, outbox, release, cookies)


def _bearer(opening: RequestEnvelope) -> bool:
    return any(n.lower() == b"authorization" for n, _ in opening.headers)


def _resume_here(
    edge: Edge, key: str, opening: RequestEnvelope, cursor: str | int | None
) -> tuple[FeedChannel, FeedUpstream] | None:
    """A resuming client joined to this edge's open upstream of its thread and credentials,
    when that upstream still has every event after the client's cursor; None otherwise.

    Nothing is asked of the primary: the open upstream is the proof of access (the primary ends
    it at the commit that revokes its token or removes its viewer), and its recent events are
    the catch-up. A mass reconnection after an edge dies thus costs the primary nothing for
    the clients that land beside others of the same credentials.

    Only a bearer token proves itself so: a sign-in cookie expires, and is renewed by use, on
    the primary, so a signed-in client is always caught up there."""
    if not _bearer(opening):
        return None
    try:
        after = parse_int64(str(cursor)) if cursor is not None else None
    except (ValueError, OverflowError):
        return None  # the primary answers it, as it answers a bad cursor
    upstream = edge.upstreams.get(key)
    if after is None or not isinstance(upstream, FeedUpstream) or upstream.closed:
        return None
    if not 0 <= after <= upstream.last:
        # A cursor past every event this edge has seen (a client of a database restored from
        # an older backup, say): the primary knows where such a client resumes.
        return None
    outbox = FeedChannel()
    if not upstream.join(outbox, b"", after):
        return None
    edge.resumed_here += 1
    return outbox, upstream


async def _join_feed(
    edge: Edge, request: Request, opening: RequestEnvelope, cursor: str | int | None
) -> tuple[FeedChannel | None, FeedUpstream | Response, Headers]:
    """The client's outbox joined to its thread's upstream, with the Set-Cookie of its own
    catch-up (a signed-in client's cookie, renewed); or (None, the refusal, nothing)."""
    key = _key("feed", opening, [])
    here = _resume_here(edge, key, opening, cursor)
    if here is not None:
        return *here, []
    try:
        answer, after = await _catch_up(edge, request, cursor)
    except PrimaryUnavailable as exc:
        return None, unavailable(str(exc)), []
    if answer.status != 200:
        return None, as_response(answer), []
    upstream, refusal = await _shared(
        edge, key, lambda: FeedUpstream(edge.link, opening, edge.forget, after)
    )
    if upstream is None:
        assert refusal is not None
        return None, refusal, []
    assert isinstance(upstream, FeedUpstream)
    outbox = FeedChannel()
    caught_up = [answer.body]
    for _ in range(_MAX_CATCH_UPS):
        if upstream.join(outbox, b"".join(caught_up), after):
            return outbox, upstream, _cookies(answer)
        # The upstream began after this client's catch-up ended: catch it up further.
        try:
            more, after = await _catch_up(edge, request, after)
        except PrimaryUnavailable as exc:
            return None, unavailable(str(exc)), []
        if more.status != 200:
            return None, as_response(more), []
        caught_up.append(more.body)
    return None, unavailable("the thread moved faster than this client could be caught up"), []
