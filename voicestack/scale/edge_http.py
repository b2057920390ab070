"""An edge's forwarding of plain requests: the request as an envelope to a primary, and the
primary's response as the edge's, with the edge's own CORS in place of the primary's."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from voicestack.scale.edge import Edge
from voicestack.scale.envelope import Headers, RequestEnvelope, ResponseEnvelope
from voicestack.scale.errors import error_envelope
from voicestack.scale.link import PrimaryUnavailable
from voicestack.scale.refused_credentials import credential_of

# Not passed on: hop-by-hop headers.
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"upgrade",
    b"te",
    b"trailer",
    b"proxy-authorization",
    b"proxy-connection",
}
# Headers that mean something between an edge and a primary only: never from a client.
INTERNAL_PREFIX = b"voicestack-"
# What a multipart upload adds to its file (boundaries, part headers, other fields).
FORM_ROOM = 64 * 1024


def relayed_headers(headers: Headers) -> Headers:
    """A primary's response headers as an edge sends them: no hop-by-hop or internal ones, and
    no CORS (the edge's own middleware answers for its clients' origins)."""
    kept: Headers = []
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower.startswith((INTERNAL_PREFIX, b"access-control-")):
            continue
        if lower == b"vary":
            tokens = [t.strip() for t in value.split(b",") if t.strip().lower() != b"origin"]
            if not tokens:
                continue
            value = b", ".join(tokens)
        kept.append((name, value))
    return kept


def as_response(envelope: ResponseEnvelope) -> Response:
    """The edge's response for a primary's (or its own) envelope."""
    response = Response(envelope.body, envelope.status)
    response.raw_headers = [
        *[(n, v) for n, v in relayed_headers(envelope.headers) if n.lower() != b"content-length"],
        (b"content-length", str(len(envelope.body)).encode()),
    ]
    return response


def unavailable(why: str) -> Response:
    """503 with Retry-After: no primary answered."""
    return as_response(
        error_envelope(503, "primary_unavailable", f"No primary is reachable now ({why}).")
    )


def refused_here(edge: Edge, scope: Scope) -> Response | None:
    """The 401 a primary gave the credential of the request of `scope`, if it refused it
    (refused_credentials.py): the edge answers it without asking."""
    if not edge.refused:
        return None
    refusal = edge.refused.refusal(credential_of(scope), edge.link.primaries.heard)
    return None if refusal is None else as_response(refusal)


def remember(edge: Edge, scope: Scope, response: Response, heard: int) -> Response:
    """`response`, made of a primary's answer to the request of `scope`, remembered if it
    refuses the request's credential; `heard`: the edge's count of primary processes when it
    asked."""
    if response.status_code == 401:
        edge.refused.note_response(credential_of(scope), response, heard)
    return response


def forwarded(
    request: Request, body: bytes, drop: frozenset[bytes] = frozenset()
) -> RequestEnvelope:
    """`request` as an envelope for a primary, without hop-by-hop, internal or `drop` headers."""
    headers = [
        (n, v)
        for n, v in request.scope["headers"]
        if n.lower() not in HOP_BY_HOP
        and n.lower() not in drop
        and not n.lower().startswith(INTERNAL_PREFIX)
    ]
    client = request.scope.get("client")
    return RequestEnvelope(
        method=request.method,
        path=request.url.path,
        query_string=request.scope.get("query_string", b""),
        headers=headers,
        body=body,
        client=(str(client[0]), int(client[1])) if client else None,
        scheme="https" if request.url.scheme == "https" else "http",
    )


async def forward(request: Request) -> Response:
    """Any route the edge does not serve itself: the primary's response to the same request."""
    edge: Edge = request.app.state.edge
    refusal = refused_here(edge, request.scope)
    if refusal is not None:  # as a single server, before the body is read
        return refusal
    heard = edge.link.primaries.heard
    settings = edge.settings
    # The primary holds each route to its own limit; the edge only bounds what it buffers.
    limit = max(settings.max_body_bytes, settings.max_audio_bytes) + FORM_ROOM
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            message = f"The body is over {limit} bytes, more than any route takes."
            return as_response(error_envelope(413, "body_too_large", message))
        chunks.append(chunk)
    try:
        answer = await edge.link.call(forwarded(request, b"".join(chunks)))
    except PrimaryUnavailable as exc:
        return unavailable(str(exc))
    if answer.status == 401:
        edge.refused.note(credential_of(request.scope), answer, heard)
    return as_response(answer)
