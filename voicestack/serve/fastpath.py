"""Direct fan-out: lets the hub write an SSE event's bytes straight to idle connections.

uvicorn's httptools protocol is subclassed only to publish itself in the ASGI scope
(`scope["extensions"]["voicestack.transport"]`); a ChannelResponse that finds it hands the
connection's transport and flow control to its Channel. The hub then writes one pre-framed
chunk to every idle subscriber in one loop, with no task wake-up and no ASGI message per event.
Connections without the extension (h11, tests' ASGI transports) keep the task path.
"""

from __future__ import annotations

from voicestack.http.sse import TRANSPORT_EXTENSION
from voicestack.serve.parser_errors import JsonParserErrors


class FanoutHttpToolsProtocol(JsonParserErrors):
    """uvicorn's httptools protocol (refusing in JSON), exposing itself for direct SSE writes."""

    def on_message_begin(self) -> None:
        """Start a request's scope as uvicorn does, plus the transport extension."""
        super().on_message_begin()
        # uvicorn types every scope extension as a dict, as the ASGI spec describes them; this
        # private one is the protocol object itself, which http/sse.py reads back.
        self.scope["extensions"] = {TRANSPORT_EXTENSION: self}  # type: ignore[dict-item]
