"""The edge's application: the public API with no database file.

Streams (query watches and thread feeds) are served here, from upstreams shared by every
client of this edge that watches the same thing (edge_streams.py); live conversations and
phone calls run here too, or are relayed to a primary when they talk through a speech-to-speech
model (edge_voice.py, edge_calls.py); every other request is forwarded whole to a primary over
NATS and answered with the primary's response (edge_http.py). With no primary or no NATS, the
streams stay open and requests are answered 503 with Retry-After.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from voicestack import __version__, jsoncodec
from voicestack.config import Settings
from voicestack.http.cors import cors_middleware
from voicestack.http.errors import CatchAll
from voicestack.http.headers import SecurityHeaders
from voicestack.http.read_timeouts import BodyTimeout
from voicestack.scale.edge import Edge
from voicestack.scale.edge_calls import call_stream
from voicestack.scale.edge_http import forward
from voicestack.scale.edge_streams import thread_events, watch
from voicestack.scale.edge_voice import thread_audio
from voicestack.scale.feed_upstream import FeedUpstream

log = logging.getLogger(__name__)

_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def healthz(request: Request) -> Response:
    """GET /healthz: this edge is alive; `nats` says whether it reaches NATS now, `primaries`
    how many primary processes it hears serving,
    `feedResumesHere` how many thread-feed clients resumed from this edge's own recent events,
    `feedJournalEvents` how many of those events came from the thread journal (JetStream),
    `streamReopens` how many times a stream was reopened (its primary lost, or moved home),
    `threadStreams` how many threads it holds a stream of (one each, shared by all their
    clients here), `feedClients` how many clients those streams feed, `voiceSessions` how
    many live conversations run here, `refusedCredentials` how many credentials a primary
    refused that this edge refuses itself now, and `refusedHere` how many requests it refused
    so (voicestack/scale/refused_credentials.py)."""
    edge: Edge = request.app.state.edge
    feeds = [u for u in edge.upstreams.values() if isinstance(u, FeedUpstream)]
    body = {
        "ok": True,
        "version": __version__,
        "role": "edge",
        "nats": edge.link.connected,
        "primaries": len(edge.link.primaries.live()),
        "feedResumesHere": edge.resumed_here,
        "feedJournalEvents": edge.link.journal_events,
        "streamReopens": edge.link.reopens,
        "threadStreams": len(feeds),
        "feedClients": sum(feed.client_count for feed in feeds),
        "voiceSessions": len(edge.voice),
        "refusedCredentials": len(edge.refused),
        "refusedHere": edge.refused.answered,
    }
    return Response(jsoncodec.dumps(body), media_type="application/json")


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
        WebSocketRoute("/api/threads/{thread_id}/audio", thread_audio),
        WebSocketRoute("/twilio/stream", call_stream),
        Route("/{path:path}", forward, methods=_METHODS),
    ]
    # As on a single server: security and CORS headers outside CatchAll, so that its 500s
    # carry them; the edge answers CORS for its clients (give it the primary's --cors-origin).
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            *cors_middleware(settings.cors_origins),
            Middleware(CatchAll),
            Middleware(BodyTimeout, settings.body_timeout_s),
        ],
        lifespan=lifespan,
    )
