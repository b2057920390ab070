"""An edge's event streams: query watches and thread feeds served from shared upstreams.

Clients with the same credentials watching the same queries share one upstream (one stream on
a primary); every client of a thread, whatever its credentials, shares the thread's upstream,
joined there as a member that the primary checks and may cut off alone. Each client still gets
what it alone is owed: the current values newer than its Last-Event-ID, or its own catch-up of
a thread, before the shared events.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import Response

from voicestack import jsoncodec
from voicestack.http.auth import presented_token
from voicestack.http.limits import STREAM_RETRY_AFTER_S
from voicestack.http.signin_auth import session_cookie
from voicestack.http.sse import ChannelResponse
from voicestack.http.state import CATCH_UP_HEADER, CURSOR_HEADER
from voicestack.http.watch import last_event_id
from voicestack.reactive.channel import FeedChannel, Outbox
from voicestack.reactive.streams import Stream
from voicestack.scale.edge import Edge
from voicestack.scale.edge_http import (
    as_response,
    forward,
    forwarded,
    refused_here,
    relayed_headers,
    remember,
    unavailable,
)
from voicestack.scale.envelope import Headers, RequestEnvelope, ResponseEnvelope
from voicestack.scale.errors import error_envelope
from voicestack.scale.feed_member import FeedMember
from voicestack.scale.feed_upstream import FeedUpstream
from voicestack.scale.link import PrimaryUnavailable
from voicestack.scale.refused_credentials import fingerprint
from voicestack.scale.upstream import RelayChannel, Upstream, WatchUpstream

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
# Times a joining client looks again for its thread's stream when the one it found had just
# closed (its last client left as this one came).
_OPEN_ATTEMPTS = 3


class BadToken(Exception):
    """A `?token=` that cannot be any token (not latin-1, or padded with whitespace): 401, as a
    single server answers."""


def _stream_opening(request: Request, query: list[tuple[str, str]]) -> RequestEnvelope:
    """The request that opens a stream for this client's credentials, whatever its cursor."""
    opening = forwarded(request, b"", _STREAM_ONLY)
    with_query_token(opening, request.url.query)
    opening.query_string = urlencode(query).encode()
    return opening


def with_query_token(opening: RequestEnvelope, query: str) -> None:
    """Give `opening` the client's `?token=` (in `query`) as its bearer token, unless it has
    one: the last non-blank value, as a single server reads it (voicestack.http.auth). Raises
    BadToken for one that cannot be any token."""
    tokens = [value for name, value in parse_qsl(query) if name == "token"]
    if tokens and not _bearer(opening):
        token = tokens[-1]
        if token != token.strip():
            # A single server looks such a token up as it is, and finds none; as a header it
            # would be trimmed, and pass.
            raise BadToken
        try:
            opening.headers.append((b"authorization", b"Bearer " + token.encode("latin-1")))
        except UnicodeEncodeError:
            raise BadToken from None


def credential_key(opening: RequestEnvelope) -> str:
    """Who the primary takes the client for, as a key: the token it presents, read as the
    primary reads it (voicestack.http.auth.presented_token), else its sign-in cookie. Spellings
    of one token (`bearer T`, `Bearer  T `, other cookies beside it) are one credential, held to
    one stream limit. A bearer token or cookie has the key refused_credentials.credential_of
    gives it."""
    headers = [(name.lower(), value) for name, value in opening.headers]
    scope = {"type": "http", "method": "GET", "path": opening.path, "headers": headers}
    token, problem = presented_token({**scope, "query_string": b""})
    if token is not None:
        said = "bearer\0" + token
    elif problem is not None:
        said = "refused\0" + problem  # the primary refuses it, whatever it says
    else:
        said = "session\0" + (session_cookie(scope) or "")
    return fingerprint(said)


def _key(kind: str, opening: RequestEnvelope, params: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256(b"%s\0%s\0" % (kind.encode(), opening.path.encode()))
    digest.update(jsoncodec.dumps(sorted(params)) + b"\0" + credential_key(opening).encode())
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
    ended by the primary at the commit that revokes it. A client that opens the watch needs
    nothing either: the primary judges the opening itself."""
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
    if (refusal := refused_here(edge, request.scope)) is not None:
        return refusal
    heard = edge.link.primaries.heard
    key = _key("watch", opening, params)
    cookies: Headers = []
    if edge.has_upstream(key):  # joining: the cookie is judged, and renewed, for this client
        cookies, refusal = await _cookie_check(edge, opening)
        if refusal is not None:
            return remember(edge, request.scope, refusal, heard)
    credential = credential_key(opening)
    if not edge.take_stream(credential):
        return _too_many(edge)
    opened_here = False

    def make() -> WatchUpstream:
        nonlocal opened_here
        opened_here = True
        return WatchUpstream(edge.link, opening, edge.forget, multi)

    try:
        upstream, refusal = await _shared(edge, key, make)
    except BaseException:
        edge.give_back_stream(credential)
        raise
    if upstream is None:
        edge.give_back_stream(credential)
        assert refusal is not None
        return remember(edge, request.scope, refusal, heard)
    assert isinstance(upstream, WatchUpstream)
    if opened_here:  # its own opening judged the cookie: the renewal it got is this client's
        cookies = _cookies(upstream.head)
    outbox = RelayChannel()
    upstream.join(outbox, last_event_id(request))

    def release() -> None:
        upstream.leave(outbox)
        edge.give_back_stream(credential)

    return _stream_response(edge, upstream, outbox, release, cookies)


async def _catch_up(
    edge: Edge, opening: RequestEnvelope, cursor: str | int | None
) -> tuple[ResponseEnvelope, int]:
    """The primary's catch-up of a feed client at `cursor`: its answer and where it ends."""
    query = [] if cursor is None else [("since", str(cursor))]
    catch_up = dataclasses.replace(
        opening,
        query_string=urlencode(query).encode(),
        headers=[*opening.headers, (CATCH_UP_HEADER.encode(), b"1")],
    )
    answer = await edge.link.call(catch_up)
    after = int(answer.header(CURSOR_HEADER.encode()) or b"0")
    return answer, after


async def thread_events(request: Request) -> Response | ChannelResponse:
    """GET /api/threads/{id}/events: the client joined to this edge's stream of the thread,
    shared with every other client of the thread here, after its own catch-up."""
    if request.method == "HEAD":
        return await forward(request)
    edge: Edge = request.app.state.edge
    resumed = last_event_id(request)
    cursor = resumed if resumed is not None else request.query_params.get("since")
    try:
        opening = _stream_opening(request, [])
    except BadToken:
        return _unauthorized()
    if (refusal := refused_here(edge, request.scope)) is not None:
        return refusal
    heard = edge.link.primaries.heard
    credential = credential_key(opening)
    if not edge.take_stream(credential):
        return _too_many(edge)
    try:
        joined = await join_feed(edge, opening, credential, cursor)
    except BaseException:
        edge.give_back_stream(credential)
        raise
    if isinstance(joined, Response):
        edge.give_back_stream(credential)
        return remember(edge, request.scope, joined, heard)
    upstream, (member, outbox), cookies = joined

    def release() -> None:
        upstream.leave(member, outbox)
        edge.give_back_stream(credential)

    return _stream_response(edge, upstream, outbox, release, cookies)


def _bearer(opening: RequestEnvelope) -> bool:
    return any(n.lower() == b"authorization" for n, _ in opening.headers)


async def join_feed(
    edge: Edge,
    opening: RequestEnvelope,
    credential: str,
    cursor: str | int | None,
    live: bool = False,
) -> tuple[FeedUpstream, tuple[FeedMember, FeedChannel], Headers] | Response:
    """The client whose feed `opening` opens (its credentials, `credential` as a key) joined
    to its thread's shared upstream after `cursor` (with `live`, after the upstream's newest
    event: no catch-up); its member there, its outbox, and the Set-Cookie of its joining (a
    signed-in client's cookie, renewed); or the refusal."""
    key = f"feed\0{opening.path}"  # one upstream per thread, whoever its clients are
    for _ in range(_OPEN_ATTEMPTS):
        upstream, refusal = await _shared(
            edge, key, lambda: FeedUpstream(edge.link, opening, edge.forget)
        )
        if upstream is None:
            assert refusal is not None
            return refusal
        assert isinstance(upstream, FeedUpstream)
        if not upstream.closed:  # else its last client left just now: open another
            break
    else:
        return unavailable("the thread's stream kept closing")
    if live:
        cursor = upstream.last
    shared_by = credential if _bearer(opening) else None
    if shared_by is not None and (beside := upstream.attach(shared_by, cursor)) is not None:
        # Another client of the same token is in, and this edge has every event the newcomer
        # missed: nothing to ask of the primary (a mass reconnection after an edge dies costs
        # it nothing for the clients that land beside others of their token).
        edge.resumed_here += 1
        return upstream, beside, []
    member, outbox = upstream.add(opening, shared_by)
    try:
        joined = await _enroll(edge, opening, upstream, member, outbox, cursor)
    except BaseException:
        upstream.leave(member, outbox)
        raise
    if isinstance(joined, Response):
        upstream.leave(member, outbox)
        return joined
    return upstream, (member, outbox), joined


async def _enroll(
    edge: Edge,
    opening: RequestEnvelope,
    upstream: FeedUpstream,
    member: FeedMember,
    outbox: FeedChannel,
    cursor: str | int | None,
) -> Headers | Response:
    """Join a new member on the stream's primary and catch its client up: the client's
    Set-Cookie, or the refusal."""
    try:
        answer, after, here = await upstream.enroll(member, cursor)
    except PrimaryUnavailable as exc:
        return unavailable(str(exc))
    if answer.status != 200:
        return as_response(answer)
    if here:
        edge.resumed_here += 1
    caught_up = [answer.body]
    for _ in range(_MAX_CATCH_UPS):
        if upstream.join(member, outbox, b"".join(caught_up), after):
            return _cookies(answer)
        # The upstream's recent events begin after this client's catch-up ended: catch it up
        # further.
        try:
            more, after = await _catch_up(edge, opening, after)
        except PrimaryUnavailable as exc:
            return unavailable(str(exc))
        if more.status != 200:
            return as_response(more)
        caught_up.append(more.body)
    return unavailable("the thread moved faster than this client could be caught up")
