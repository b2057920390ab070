"""What a request handler reaches through the app: the Runtime and the caller."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from voicestack.functions.context import Caller
from voicestack.runtime import Runtime


def runtime(conn: HTTPConnection) -> Runtime:
    """The Runtime serving this request."""
    return conn.app.state.runtime


def caller(conn: HTTPConnection) -> Caller | None:
    """Who is calling (None until authentication is configured)."""
    return conn.scope.get("voicestack.caller")
