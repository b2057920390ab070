"""`GET /api/threads/{id}/audio`: the live-conversation WebSocket (DESIGN §9).

The route only moves messages: it checks the thread through the feed it opens (a non-member is
closed with 4404), reads the `start` message, and then hands every frame to the session the
runtime made; the conversation itself is `voicestack.voice.realtime.session`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketState

from voicestack.functions.errors import FunctionError
from voicestack.http.state import caller, runtime, viewer
from voicestack.reactive.streams import Stream
from voicestack.voice.live_sessions import LiveSession
from voicestack.voice.realtime.codec import load_audio_libraries
from voicestack.voice.realtime.wire import (
    CLOSE_NORMAL,
    CLOSE_NOT_FOUND,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    MAX_FRAME_BYTES,
    ProtocolError,
    Start,
    event,
    parse_control,
    parse_start,
)


class SocketClient:
    """The session's VoiceClient on a Starlette WebSocket: one send at a time, and nothing
    raised once the client has gone."""

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self._lock = asyncio.Lock()

    async def _send(self, message: dict[str, Any]) -> None:
        async with self._lock:
            if self._websocket.application_state != WebSocketState.CONNECTED:
                return
            with contextlib.suppress(Exception):  # the client went away mid-send
                await self._websocket.send(message)

    async def send_event(self, text: str) -> None:
        """Send one JSON event."""
        await self._send({"type": "websocket.send", "text": text})

    async def send_audio(self, data: bytes) -> None:
        """Send one binary audio frame."""
        await self._send({"type": "websocket.send", "bytes": data})

    async def close(self, code: int, reason: str) -> None:
        """Close the socket (once)."""
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def refuse(self, error: ProtocolError) -> None:
        """Send `error`'s event, and close when the session cannot go on."""
        await self.send_event(event("error", code=error.code, message=error.message))
        if error.close is not None:
            await self.close(error.close, error.code)


def received_frame(message: Mapping[str, Any]) -> bytes | str | None:
    """A received message's payload; None when the client has gone."""
    if message["type"] == "websocket.disconnect":
        return None
    data: bytes | None = message.get("bytes")
    if data is not None:
        if len(data) > MAX_FRAME_BYTES:
            raise ProtocolError(
                "frame_too_large",
                f"Frames may hold at most {MAX_FRAME_BYTES} bytes.",
                CLOSE_TOO_BIG,
            )
        return data
    text: str = message.get("text") or ""
    return text


# The conversation's thread feed (raises FunctionError when the caller may not see the
# thread, or ProtocolError), and its session, from the feed, the `start` message and the client.
OpenFeed = Callable[[], Awaitable[Stream]]
OpenSession = Callable[[Stream, Start, "SocketClient"], Awaitable[LiveSession]]


async def thread_audio(websocket: WebSocket) -> None:
    """GET /api/threads/{id}/audio: a spoken conversation on the thread, over one WebSocket."""
    rt = runtime(websocket)
    thread_id = websocket.path_params["thread_id"]
    user = caller(websocket)

    async def open_session(feed: Stream, start: Start, client: SocketClient) -> LiveSession:
        return await rt.live.open_live_session(thread_id, user, feed, start, client)

    await live_socket(
        websocket, lambda: rt.open_thread_feed(thread_id, viewer(websocket), None), open_session
    )


async def live_socket(websocket: WebSocket, open_feed: OpenFeed, open_session: OpenSession) -> None:
    """Accept `websocket` and hold a live conversation on it: the feed first (a caller who may
    not see the thread is closed with 4404), then the `start` message, then every frame to the
    session until either side ends it."""
    await websocket.accept()
    client = SocketClient(websocket)
    try:
        feed = await open_feed()
    except FunctionError as exc:
        await client.refuse(ProtocolError(exc.code, exc.message, CLOSE_NOT_FOUND))
        return
    except ProtocolError as exc:
        await client.refuse(exc)
        return
    session: LiveSession | None = None
    try:
        first = received_frame(await websocket.receive())
        if first is None:
            return
        if isinstance(first, bytes):
            raise ProtocolError(
                "start_expected", "Send the start message before any audio.", CLOSE_POLICY
            )
        start = parse_start(first)
        await load_audio_libraries()
        session = await open_session(feed, start, client)
        await session.begin()
        await _converse(websocket, client, session)
    except ProtocolError as exc:
        await client.refuse(exc)
    finally:
        if session is not None:
            await session.close()
        else:
            feed.close()


async def _converse(websocket: WebSocket, client: SocketClient, session: LiveSession) -> None:
    while (frame := received_frame(await websocket.receive())) is not None:
        if isinstance(frame, bytes):
            await session.audio(frame)
            continue
        try:
            control = parse_control(frame)
        except ProtocolError as exc:
            if exc.close is not None:
                raise
            await client.refuse(exc)
            continue
        if not await session.control(control):
            await client.close(CLOSE_NORMAL, "stopped")
            return


routes = [WebSocketRoute("/api/threads/{thread_id}/audio", thread_audio)]
