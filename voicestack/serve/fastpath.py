"""Direct fan-out: lets the hub write an SSE event's bytes straight to idle connections.

uvicorn's httptools protocol is subclassed to publish itself in the ASGI scope
(`scope["extensions"]["voicestack.transport"]`); a ChannelResponse that finds it hands the
connection's transport and flow control to its Channel, then detaches: its ASGI call returns
and the connection carries the stream on its own. The hub then writes one pre-framed chunk to
every idle subscriber in one loop, with no task wake-up and no ASGI message per event.
Connections without the extension (h11, tests' ASGI transports) keep the task path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from voicestack.http.sse import TRANSPORT_EXTENSION
from voicestack.serve.parser_errors import JsonParserErrors


class FanoutHttpToolsProtocol(JsonParserErrors):
    """uvicorn's httptools protocol (refusing in JSON), exposing itself for direct SSE writes,
    and able to carry an event stream once its ASGI call has returned (detached)."""

    # Set while a detached event stream owns the connection: called once it is lost.
    _stream_lost: Callable[[], None] | None = None
    _lost = False

    @property
    def streaming_detached(self) -> bool:
        """True while a detached event stream owns the connection (no request is parsed)."""
        return self._stream_lost is not None

    def on_message_begin(self) -> None:
        """Start a request's scope as uvicorn does, plus the transport extension."""
        super().on_message_begin()
        # uvicorn types every scope extension as a dict, as the ASGI spec describes them; this
        # private one is the protocol object itself, which http/sse.py reads back.
        self.scope["extensions"] = {TRANSPORT_EXTENSION: self}  # type: ignore[dict-item]

    def detach(self, on_lost: Callable[[], None]) -> None:
        """Let the current request's ASGI call return while its event stream goes on; call
        `on_lost` once the connection is gone (the stream closing it, or the client)."""
        # uvicorn ends a connection whose app returned before the response did; the stream's
        # outbox finishes the response itself. Dropping the request's state lets the scope,
        # its headers and the request cycle go while the stream lasts.
        self.cycle.response_complete = True
        self.cycle = None  # type: ignore[assignment]
        self.headers = []
        if self._lost:
            asyncio.get_running_loop().call_soon(on_lost)
        else:
            self._stream_lost = on_lost

    def data_received(self, data: bytes) -> None:
        """Parse as uvicorn does; while a detached stream owns the connection, ignore what the
        client sends (an event stream's client has nothing more to say)."""
        if self._stream_lost is None:
            super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        """Clean up as uvicorn does, then end a detached stream."""
        self._lost = True
        super().connection_lost(exc)
        lost, self._stream_lost = self._stream_lost, None
        if lost is not None:
            lost()

    def shutdown(self) -> None:
        """uvicorn's graceful close, except for a detached stream: the runtime ends those
        (thread feeds once the replies have drained), and the stream then closes the
        connection."""
        if self._stream_lost is None:
            super().shutdown()
