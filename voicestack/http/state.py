"""What a request handler reaches through the app: the Runtime, the caller and the access guard."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from voicestack.auth.users import Identity
from voicestack.http.access import AccessGuard, StillAllowed
from voicestack.http.auth import CALLER_KEY, CHECKED_AT_KEY, IDENTITY_KEY
from voicestack.identity import Caller
from voicestack.reactive.channel import Outbox
from voicestack.runtime import Runtime


def runtime(conn: HTTPConnection) -> Runtime:
    """The Runtime serving this request."""
    return conn.app.state.runtime


def caller(conn: HTTPConnection) -> Caller | None:
    """Who is calling (None only on public routes, which need no token)."""
    return conn.scope.get(CALLER_KEY)


def identity(conn: HTTPConnection) -> Identity | None:
    """The caller and the token they presented."""
    return conn.scope.get(IDENTITY_KEY)


def guard_stream(
    conn: HTTPConnection, outbox: Outbox, still_allowed: StillAllowed | None = None
) -> None:
    """End `outbox` at the first commit that revokes the caller's token or makes
    `still_allowed` false. Call it before checking the stream's access in the database."""
    who = identity(conn)
    if who is not None:
        guard: AccessGuard = conn.app.state.access
        guard.watch(outbox, who, still_allowed, conn.scope.get(CHECKED_AT_KEY))


def stream_checked(conn: HTTPConnection, outbox: Outbox, version: int) -> None:
    """Tell the guard that the stream's access check passed in the snapshot at `version`.
    Call it before the stream is sent anything."""
    if identity(conn) is not None:
        guard: AccessGuard = conn.app.state.access
        guard.checked(outbox, version)
