"""One connection of the fake Realtime provider: client events in, server events out, the VAD
between, and everything recorded for the test that owns the fake."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from voicestack.testing.fake_openai import realtime_conversation as conversation
from voicestack.testing.fake_openai import realtime_input as audio_input
from voicestack.testing.fake_openai.realtime_audio import EnergyVad
from voicestack.testing.fake_openai.realtime_events import (
    Refuse,
    SessionView,
    error_event,
    event,
    initial_session,
    invalid,
)
from voicestack.testing.fake_openai.realtime_response import ResponseRun
from voicestack.testing.fake_openai.realtime_script import (
    Naming,
    RealtimeError,
    Script,
)
from voicestack.testing.fake_openai.realtime_state import RealtimeState
from voicestack.testing.fake_openai.wire import dumps


def _find_transport(send: Any, depth: int = 0) -> Any:
    # The server's ASGI `send` is a bound method of its protocol object, which holds the TCP
    # transport; Starlette may wrap it in closures, so look through those too.
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None or depth > 3:
        return transport
    for cell in getattr(send, "__closure__", None) or ():
        with contextlib.suppress(ValueError):
            found = _find_transport(cell.cell_contents, depth + 1)
            if found is not None:
                return found
    return None


def _transport_abort(ws: WebSocket) -> bool:
    # Aborting the transport is the only way to drop a socket without a close frame.
    transport = _find_transport(ws._send)
    if transport is None or not hasattr(transport, "abort"):
        return False
    transport.abort()
    return True


class Connection:
    """Serves one WebSocket as its script says; see realtime_script for the knobs."""

    def __init__(
        self, ws: WebSocket, state: RealtimeState, script: Script, naming: Naming, model: str
    ) -> None:
        """Bind a connection (already accepted) to its script and record."""
        self.ws, self.state, self.script, self.naming = ws, state, script, naming
        self.loop = asyncio.get_running_loop()
        self.session = initial_session(model, naming)
        self.view = SessionView(self.session, naming)
        self.vad = EnergyVad(script.vad.rms_threshold, script.vad.min_speech_ms, 300)
        self.input_text_tokens = self.committed_audio_ms = 0
        self.silent = self.gone = False
        self.close_code: int | None = None
        self._send_lock = asyncio.Lock()
        self.turns, self.responses = list(script.turns), list(script.responses)
        self.items: dict[str, dict[str, Any]] = {}
        self.last_item: str | None = None
        self.speech_item: str | None = None
        self.buffer_ms = 0.0
        self.last_said = ""
        self.active: tuple[ResponseRun, asyncio.Task[None]] | None = None
        self.record: dict[str, Any] = {
            "id": self.session["id"],
            "model": model,
            "naming": naming,
            "path": ws.url.path,
            "query": dict(ws.query_params),
            "headers": dict(ws.headers),
            "open": True,
            "close_code": None,
            "client_events": [],
            "sent": [],
            "session": self.snapshot(),
            "input_audio_ms": 0,
            "truncations": [],
            "function_call_outputs": [],
            "responses": [],
        }

    def log(self, key: str, value: Any) -> None:
        """Append `value` to the record's list `key`."""
        self.state.update(self.record, lambda r: r[key].append(value))

    async def send(self, message: dict[str, Any]) -> None:
        """Send one server event unless the script made the connection silent or drop it."""
        if not self.silent:
            await self._write(message)

    async def inject(self, message: dict[str, Any]) -> None:
        """Send a raw event the test asked for, even on a silent connection."""
        await self._write(message)

    async def _write(self, message: dict[str, Any]) -> None:
        if self.gone:
            return
        try:
            async with self._send_lock:
                await self.ws.send_text(dumps(message))
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.gone = True  # the client hung up; the reader sees it next
            return
        self.log("sent", message.get("type"))

    async def drop(self) -> None:
        """Drop the TCP connection abruptly (a close frame with 1011 if that is impossible)."""
        self.gone, self.close_code = True, 1006
        if not _transport_abort(self.ws):
            await self.ws.close(1011)

    async def fault(self, kind: str, code: int) -> None:
        """Break the connection the way a response script asked."""
        if kind == "drop":
            await self.drop()
        elif kind == "close":
            self.gone, self.close_code = True, code
            await self.ws.close(code)
        else:
            self.silent = True

    async def error(self, error: RealtimeError, client_event: dict[str, Any]) -> None:
        """Send an `error` event answering `client_event`."""
        event_id = client_event.get("event_id")
        await self.send(error_event(error, event_id if isinstance(event_id, str) else None))

    def add_item(self, item_id: str, kind: str, call_id: str | None = None) -> str | None:
        """Register a conversation item; return the id of the item before it."""
        previous, self.last_item = self.last_item, item_id
        self.items[item_id] = {"kind": kind, "call_id": call_id, "audio_ms": 0}
        return previous

    def set_item_audio(self, item_id: str, audio_ms: int) -> None:
        """Note how much of an assistant item's audio went out (truncation checks it)."""
        self.items[item_id]["audio_ms"] = audio_ms

    def record_response(self, summary: dict[str, Any]) -> None:
        """Log how a response ended."""
        self.log("responses", summary)

    async def serve(self) -> None:
        """Greet, then handle client events until the client or the script ends the socket."""
        self.silent = self.script.silent
        await self.send(event("session.created", self.naming, session=self.session))
        try:
            while not self.gone:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    self.close_code = self.close_code or message.get("code")
                    break
                text = message.get("text")
                if text is None and message.get("bytes") is not None:
                    text = message["bytes"].decode("utf-8", "replace")
                await self._handle(text or "")
        finally:
            if self.active is not None:
                self.active[1].cancel()

    async def _handle(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self.log("client_events", {"unparsed": text[:1000]})
            if not self.silent:
                problem = "The event must be a JSON object with a string 'type'."
                await self.error(invalid(problem, "invalid_json"), {})
            return
        kind = message["type"]
        logged = dict(message)
        if kind == "input_audio_buffer.append" and isinstance(message.get("audio"), str):
            encoded = message["audio"]
            logged["audio"] = {"bytes": len(encoded) * 3 // 4 - encoded[-2:].count("=")}
        self.log("client_events", logged)
        if self.silent:
            return
        handler = _HANDLERS.get(kind)
        try:
            if handler is None:
                problem = f"Invalid value: '{kind}'. Unsupported client event type."
                raise Refuse(invalid(problem, "invalid_value", "type"))
            await handler(self, message)
        except Refuse as refused:
            await self.error(refused.error, message)

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the session."""
        return dict(json.loads(dumps(self.session)))


_Handler = Callable[[Connection, dict[str, Any]], Awaitable[None]]
_HANDLERS: dict[str, _Handler] = {
    "session.update": conversation.session_update,
    "input_audio_buffer.append": audio_input.append,
    "input_audio_buffer.commit": audio_input.manual_commit,
    "input_audio_buffer.clear": audio_input.clear,
    "conversation.item.create": conversation.item_create,
    "conversation.item.truncate": conversation.truncate,
    "conversation.item.delete": conversation.delete,
    "response.create": conversation.response_create,
    "response.cancel": conversation.cancel,
}
