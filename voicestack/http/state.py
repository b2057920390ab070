"""What a request handler reaches through the app: the Runtime, the caller and their token."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from voicestack.auth.users import Identity
from voicestack.http.auth import CALLER_KEY, CHECKED_AT_KEY, IDENTITY_KEY
from voicestack.identity import Caller
from voicestack.reactive.access import Viewer
from voicestack.runtime import Runtime

# The scope key of a request an edge forwarded over NATS (voicestack/scale/asgi_call.py).
FROM_EDGE_KEY = "voicestack.from_edge"
# The request header by which an edge asks a thread feed's route for its catch-up alone.
CATCH_UP_HEADER = "voicestack-catch-up"
# The response header that carries the event id live events continue after.
CURSOR_HEADER = "voicestack-cursor"
# An edge's shared stream of a thread (voicestack/agent/shared_feeds.py): the request header
# naming it, on its opening and on each client's joining, and the one naming that client.
SHARE_HEADER = "voicestack-feed-share"
MEMBER_HEADER = "voicestack-feed-member"
# The shared stream's answer header with the thread's newest event id where the stream begins
# (nothing of the thread lies between it and the stream's first event).
THREAD_NEWEST_HEADER = "voicestack-thread-newest"
# The header an edge puts on its own calls for a live conversation it runs (never a client's:
# an edge drops every `voicestack-` header its clients send).
EDGE_CALL_HEADER = "voicestack-edge-call"
# The answer's header with the joined client's state (voicestack.agent.shared_feeds.MemberState).
MEMBER_STATE_HEADER = "voicestack-member-state"


def runtime(conn: HTTPConnection) -> Runtime:
    """The Runtime serving this request."""
    rt: Runtime = conn.app.state.runtime
    return rt


def caller(conn: HTTPConnection) -> Caller | None:
    """Who is calling (None only on public routes, which need no token)."""
    who: Caller | None = conn.scope.get(CALLER_KEY)
    return who


def identity(conn: HTTPConnection) -> Identity | None:
    """The caller and the token they presented."""
    who: Identity | None = conn.scope.get(IDENTITY_KEY)
    return who


def viewer(conn: HTTPConnection) -> Viewer | None:
    """Who opens a stream on this request, for the access guard (None on public routes)."""
    who = identity(conn)
    return None if who is None else Viewer(who, conn.scope.get(CHECKED_AT_KEY))
