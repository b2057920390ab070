"""The fake Realtime provider with a stopwatch: `python -m bench.realtime_relay_fake --port 0`.

It is voicestack's fake OpenAI provider (voicestack.testing.fake_openai, same flags, same
scripts) with two hooks for the relay bench, installed in this process only:

- every `input_audio_buffer.append` is stamped when its frame reaches the connection (before
  it is parsed), with the bytes of audio it carries;
- every `response.output_audio.delta` is stamped just before it is written to the socket, with
  its bytes of audio.

Stamps are CLOCK_MONOTONIC nanoseconds (`time.monotonic_ns`, one clock for every process on a
Linux machine), per provider connection, in connection order: `GET /_bench/stamps` returns
`{"sessions": [{"id", "in": [[ns, bytes], ...], "out": [[ns, bytes], ...]}, ...]}` (in the order
the connections opened), and
`GET /_bench/stamps?count=1` just `{"count": n}`. The fake's own per-event records skip
appends and audio deltas here: an hour of 50 calls would otherwise hold millions of them.
"""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voicestack.testing.fake_openai import realtime_connection, server
from voicestack.testing.fake_openai.app import build_app as build_fake_app
from voicestack.testing.fake_openai.realtime_connection import Connection
from voicestack.testing.fake_openai.state import FakeState

APPEND = "input_audio_buffer.append"
AUDIO_DELTAS = ("response.output_audio.delta", "response.audio.delta")

_stamps: dict[str, dict[str, list[tuple[int, int]]]] = {}  # connection id -> in/out stamps
_received_at: dict[int, int] = {}  # id(connection) -> when the frame being handled arrived


def _decoded_bytes(encoded: Any) -> int:
    if not isinstance(encoded, str):
        return 0
    return len(base64.b64decode(encoded))


def _install() -> None:
    """Wrap the fake's connection so that audio both ways is stamped."""
    serve, handle, write, log = (
        Connection.serve,
        Connection._handle,
        Connection._write,
        Connection.log,
    )
    append = realtime_connection._HANDLERS[APPEND]

    def stamps(conn: Connection) -> dict[str, list[tuple[int, int]]]:
        return _stamps.setdefault(conn.record["id"], {"in": [], "out": []})

    async def registered_serve(self: Connection) -> None:
        stamps(self)  # connection order, whenever its audio starts
        await serve(self)

    async def stamped_handle(self: Connection, text: str) -> None:
        _received_at[id(self)] = time.monotonic_ns()
        await handle(self, text)

    async def stamped_append(conn: Connection, message: dict[str, Any]) -> None:
        received = _received_at.get(id(conn), time.monotonic_ns())
        stamps(conn)["in"].append((received, _decoded_bytes(message.get("audio"))))
        await append(conn, message)

    async def stamped_write(self: Connection, message: dict[str, Any]) -> None:
        if message.get("type") in AUDIO_DELTAS and not self.gone:
            stamps(self)["out"].append((time.monotonic_ns(), _decoded_bytes(message.get("delta"))))
        await write(self, message)

    def lean_log(self: Connection, key: str, value: Any) -> None:
        if key == "client_events" and isinstance(value, dict) and value.get("type") == APPEND:
            return
        if key == "sent" and value in AUDIO_DELTAS:
            return
        log(self, key, value)

    Connection.serve = registered_serve  # type: ignore[method-assign]
    Connection._handle = stamped_handle  # type: ignore[method-assign]
    Connection._write = stamped_write  # type: ignore[method-assign]
    Connection.log = lean_log  # type: ignore[method-assign]
    realtime_connection._HANDLERS[APPEND] = stamped_append


async def _stamps_route(request: Request) -> Response:
    """GET /_bench/stamps: every connection's stamps (or their count with ?count=1)."""
    if request.query_params.get("count"):
        return JSONResponse({"count": len(_stamps)})
    return JSONResponse(
        {"sessions": [{"id": key, "in": s["in"], "out": s["out"]} for key, s in _stamps.items()]}
    )


def _build_app(state: FakeState | None = None) -> Starlette:
    app = build_fake_app(state)
    app.router.routes.append(Route("/_bench/stamps", _stamps_route, methods=["GET"]))
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the stamped fake until stopped (the flags of voicestack.testing.fake_openai)."""
    _install()
    vars(server)["build_app"] = _build_app  # what the fake's server serves, with the route
    return server.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
