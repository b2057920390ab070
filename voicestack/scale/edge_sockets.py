"""The WebSockets an edge relays to a primary (the live-conversation socket, Twilio's media
stream): the client talks to the edge, the conversation runs on the primary, frame for frame.

A socket is not resumable: when its primary or NATS goes away, the client's socket is closed
with 1012 (service restart) and the client reconnects, as it would to a single server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voicestack import jsoncodec
from voicestack.scale.edge_http import INTERNAL_PREFIX
from voicestack.scale.envelope import RequestEnvelope
from voicestack.scale.link import EdgeLink, PrimaryUnavailable
from voicestack.scale.sockets import BYTES, CLOSE, TEXT, close_payload, parse_close

log = logging.getLogger(__name__)

CLOSE_TRY_AGAIN = 1013
CLOSE_RESTART = 1012
# The handshake's own headers: the primary's socket is not a new handshake.
_NOT_PASSED = {
    b"connection",
    b"upgrade",
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-extensions",
}


class SocketRelay:
    """One client's WebSocket and its socket on a primary."""

    def __init__(self, link: EdgeLink, websocket: WebSocket) -> None:
        self.link = link
        self.websocket = websocket
        self.primary: str | None = None
        self.stream_id: str | None = None
        self._outgoing: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.closed = False

    def receive(self, chunk: bytes) -> None:
        """Sockets get frames, not event-stream chunks."""

    def frame(self, kind: str, payload: bytes) -> None:
        """A frame from the primary, sent to the client in order by the relay's writer."""
        self._outgoing.put_nowait((kind, payload))

    def ended(self, reason: str) -> None:
        """Not used by sockets: their end is a `close` frame."""
        self.primary_lost()

    def primary_lost(self) -> None:
        """The primary or NATS went away: close the client's socket so that it reconnects."""
        payload = close_payload(CLOSE_RESTART, "primary_unavailable")
        self._outgoing.put_nowait((CLOSE, payload))

    async def run(self, request: RequestEnvelope, replay: list[str] | None = None) -> None:
        """Open the socket on a primary, then relay both ways until either side closes.
        `replay`: the client's socket is accepted already, and these text frames, read from it
        already, go to the primary first."""
        websocket = self.websocket
        try:
            stream_id, answer = await self.link.open_socket(request, self)
        except PrimaryUnavailable:
            if replay is None:  # a replayed socket is Twilio's, which takes no such event
                await websocket.accept()
                error = {
                    "type": "error",
                    "code": "primary_unavailable",
                    "message": "No primary is reachable now: try again shortly.",
                }
                await websocket.send_text(jsoncodec.dumps(error).decode())
            await websocket.close(CLOSE_TRY_AGAIN, "primary_unavailable")
            return
        if not answer.accepted:
            await websocket.close(answer.code, answer.reason)
            return
        self.stream_id, self.primary = stream_id, answer.primary
        if replay is None:
            await websocket.accept(answer.subprotocol)
        writer = asyncio.get_running_loop().create_task(self._write())
        primary = answer.primary or ""
        try:
            for text in replay or []:
                if not await self.link.send_frame(primary, stream_id, TEXT, text.encode()):
                    self.primary_lost()
            await self._read(primary, stream_id)
        finally:
            writer.cancel()
            self.link.forget_stream(stream_id)

    async def _read(self, primary: str, stream_id: str) -> None:
        websocket = self.websocket
        while True:
            try:
                message = await websocket.receive()
            except (WebSocketDisconnect, RuntimeError):
                message = {"type": "websocket.disconnect", "code": 1001}
            if message["type"] == "websocket.disconnect":
                if not self.closed:
                    code = int(message.get("code") or 1001)
                    await self.link.send_frame(primary, stream_id, CLOSE, close_payload(code, ""))
                return
            if message.get("bytes") is not None:
                sent = await self.link.send_frame(primary, stream_id, BYTES, message["bytes"])
            else:
                text = (message.get("text") or "").encode()
                sent = await self.link.send_frame(primary, stream_id, TEXT, text)
            if not sent:
                self.primary_lost()

    async def _write(self) -> None:
        websocket = self.websocket
        while True:
            kind, payload = await self._outgoing.get()
            if websocket.application_state != WebSocketState.CONNECTED:
                return
            with contextlib.suppress(Exception):  # the client went away mid-send
                if kind == TEXT:
                    await websocket.send_text(payload.decode())
                elif kind == BYTES:
                    await websocket.send_bytes(payload)
                elif kind == CLOSE:
                    self.closed = True
                    code, reason = parse_close(payload)
                    await websocket.close(code, reason)
                    return


def socket_request(websocket: WebSocket) -> RequestEnvelope:
    """The request that opens `websocket`'s socket on a primary."""
    headers = [
        (n, v)
        for n, v in websocket.scope["headers"]
        if n.lower() not in _NOT_PASSED and not n.lower().startswith(INTERNAL_PREFIX)
    ]
    client = websocket.scope.get("client")
    return RequestEnvelope(
        method="GET",
        path=websocket.url.path,
        query_string=websocket.scope.get("query_string", b""),
        headers=headers,
        client=(str(client[0]), int(client[1])) if client else None,
    )
