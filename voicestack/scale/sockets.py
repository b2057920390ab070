"""WebSockets an edge relays to the primary: the live-conversation socket and Twilio's media
stream run in the primary's own application, frame for frame.

Frames travel as NATS messages with a `Voicestack-Frame` header (`text`, `bytes` or `close`;
a close carries `{"code", "reason"}`): from the edge on `voicestack.frames.<primary>.<edge>.
<socket>`, back on the edge's stream subject of the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Scope

from voicestack import jsoncodec
from voicestack.http.state import FROM_EDGE_KEY
from voicestack.scale.envelope import RequestEnvelope

FRAME_HEADER = "Voicestack-Frame"
TEXT, BYTES, CLOSE = "text", "bytes", "close"
CLOSE_INTERNAL = 1011

SendFrame = Callable[[str, bytes], Awaitable[None]]


def close_payload(code: int, reason: str) -> bytes:
    """The payload of a `close` frame."""
    return jsoncodec.dumps({"code": code, "reason": reason})


def parse_close(payload: bytes) -> tuple[int, str]:
    """A `close` frame's code and reason (1000 and none when it holds nothing usable)."""
    with contextlib.suppress(ValueError, TypeError, KeyError):
        body = json.loads(payload)
        return int(body["code"]), str(body.get("reason", ""))
    return 1000, ""


@dataclass(slots=True)
class SocketAnswer:
    """How the primary's application answered a socket: accepted, or closed at once."""

    accepted: bool
    subprotocol: str | None = None
    code: int = 1000
    reason: str = ""
    primary: str | None = None  # the primary process that holds it

    @property
    def ok(self) -> bool:
        """Whether the socket is open."""
        return self.accepted

    def encode(self) -> bytes:
        """The answer as a NATS payload."""
        return jsoncodec.dumps(
            {
                "accepted": self.accepted,
                "subprotocol": self.subprotocol,
                "code": self.code,
                "reason": self.reason,
                "primary": self.primary,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> SocketAnswer:
        """The answer in a NATS payload; ValueError when it is not one."""
        body = json.loads(data)
        if not isinstance(body, dict):
            raise ValueError("not a socket answer")
        return cls(
            bool(body["accepted"]),
            body.get("subprotocol"),
            int(body.get("code", 1000)),
            str(body.get("reason", "")),
            body.get("primary"),
        )


def socket_scope(request: RequestEnvelope) -> Scope:
    """The ASGI scope of a relayed WebSocket."""
    protocols = next(
        (v.decode("latin-1") for n, v in request.headers if n.lower() == b"sec-websocket-protocol"),
        "",
    )
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": request.query_string,
        "root_path": "",
        "headers": request.headers,
        "client": request.client,
        "server": ("edge-forwarded", 0),
        "subprotocols": [p.strip() for p in protocols.split(",") if p.strip()],
        "extensions": {},
        FROM_EDGE_KEY: True,
    }


class PumpedSocket:
    """A WebSocket of the primary's application whose client is on an edge."""

    def __init__(self, app: ASGIApp, request: RequestEnvelope, send_frame: SendFrame) -> None:
        self._app = app
        self._request = request
        self._send_frame = send_frame
        loop = asyncio.get_running_loop()
        self._incoming: asyncio.Queue[Message] = asyncio.Queue()
        self._answer: asyncio.Future[SocketAnswer] = loop.create_future()
        self._closed = False
        self.task: asyncio.Task[None] | None = None

    async def opened(self) -> SocketAnswer:
        """Start the application on the socket; how it answered."""
        self.task = asyncio.get_running_loop().create_task(self._run())
        return await self._answer

    def deliver(self, kind: str, payload: bytes) -> None:
        """A frame from the client."""
        if kind == TEXT:
            self._incoming.put_nowait({"type": "websocket.receive", "text": payload.decode()})
        elif kind == BYTES:
            self._incoming.put_nowait({"type": "websocket.receive", "bytes": payload})
        else:
            self.close(parse_close(payload)[0])

    def close(self, code: int = 1001) -> None:
        """The client is gone (or its edge): the application sees it disconnect."""
        self._incoming.put_nowait({"type": "websocket.disconnect", "code": code})

    async def _run(self) -> None:
        connected = False

        async def receive() -> Message:
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            return await self._incoming.get()

        async def send(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.accept":
                self._answer.set_result(SocketAnswer(True, message.get("subprotocol")))
            elif kind == "websocket.send" and not self._closed:
                if message.get("bytes") is not None:
                    await self._send_frame(BYTES, message["bytes"])
                else:
                    await self._send_frame(TEXT, message.get("text", "").encode())
            elif kind == "websocket.close":
                code, reason = message.get("code", 1000), message.get("reason") or ""
                if not self._answer.done():
                    self._answer.set_result(SocketAnswer(False, None, code, reason))
                elif not self._closed:
                    await self._send_frame(CLOSE, close_payload(code, reason))
                self._closed = True
            elif kind == "websocket.http.response.start" and not self._answer.done():
                self._answer.set_result(SocketAnswer(False, None, 1008, "refused"))

        try:
            await self._app(socket_scope(self._request), receive, send)
        finally:
            if not self._answer.done():
                self._answer.set_result(SocketAnswer(False, None, CLOSE_INTERNAL, "failed"))
            elif not self._closed:
                self._closed = True
                with contextlib.suppress(Exception):
                    await self._send_frame(CLOSE, close_payload(1000, ""))
