"""Twilio Media Streams on a live-conversation session: the adapter between the two.

Twilio sends JSON text frames: `connected`, `start` (with `customParameters`, `callSid` and
`streamSid`), `media` (base64 μ-law at 8 kHz), `mark` (a mark we sent, echoed once the audio
before it has played) and `stop`. The session (voicestack.voice.realtime.session) does the turn
taking, barge-in and replies; CallClient is its VoiceClient, turning its audio frames into
`media` messages, its `clear` into Twilio's `clear`, and each spoken sentence's end into a
`mark` named after the reply and the milliseconds of its audio sent so far. An echoed mark
becomes the session's `played` report, so a barge-in keeps the words the caller heard.

A "sentence" of under MIN_MARK_MS is marked together with what follows it: a speech-to-speech
model's audio comes in 20 ms pieces, and a mark after each doubled the messages both ways
(Twilio echoes every mark) for a precision no caller hears. The reply's end is always marked.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from voicestack.voice.realtime.wire import (
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    MAX_FRAME_BYTES,
    Control,
    Played,
    ProtocolError,
    Start,
)

log = logging.getLogger(__name__)

# Twilio streams and plays μ-law at 8 kHz, one channel.
CALL_AUDIO = Start(8000, "mulaw")
_BYTES_PER_MS = 8  # μ-law at 8 kHz
MIN_MARK_MS = 100


@dataclass(frozen=True, slots=True)
class StreamStart:
    """A media stream's `start`: which call and stream, and the token it was given."""

    stream_sid: str
    call_sid: str
    token: str


@dataclass(frozen=True, slots=True)
class Audio:
    """Caller audio from a `media` message, as μ-law bytes."""

    mulaw: bytes


@dataclass(frozen=True, slots=True)
class Ended:
    """The call's `stop`: the stream is over."""


Inbound = Audio | Played | Ended | None  # None: a message with nothing for the session


def _message(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("invalid_json", "not JSON", CLOSE_POLICY) from None
    if not isinstance(value, dict) or not isinstance(value.get("event"), str):
        raise ProtocolError("invalid_message", "no event", CLOSE_POLICY)
    return value


def parse_start(text: str) -> StreamStart | None:
    """The stream's `start`; None for `connected`, which comes first. Anything else, or a
    `start` without its call or stream, is a ProtocolError."""
    message = _message(text)
    if message["event"] == "connected":
        return None
    start = message.get("start")
    if message["event"] != "start" or not isinstance(start, dict):
        raise ProtocolError("start_expected", "start expected", CLOSE_POLICY)
    parameters = start.get("customParameters")
    token = parameters.get("token") if isinstance(parameters, dict) else None
    stream_sid = start.get("streamSid") or message.get("streamSid")
    call_sid = start.get("callSid")
    if not (isinstance(stream_sid, str) and stream_sid and isinstance(call_sid, str)):
        raise ProtocolError("invalid_start", "start lacks its callSid or streamSid", CLOSE_POLICY)
    # A missing token is a wrong one: it is refused where tokens are checked.
    return StreamStart(stream_sid, call_sid, token if isinstance(token, str) else "")


def parse_inbound(text: str) -> Inbound:
    """A message after `start`, as what it means to the session (marks not ours are None)."""
    message = _message(text)
    kind = message["event"]
    if kind == "media":
        media = message.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            raise ProtocolError("invalid_media", "media without a payload", CLOSE_POLICY)
        if len(payload) > MAX_FRAME_BYTES * 4 // 3 + 4:
            raise ProtocolError("frame_too_large", "media payload too large", CLOSE_TOO_BIG)
        try:
            return Audio(base64.b64decode(payload, validate=True))
        except binascii.Error:
            raise ProtocolError("invalid_media", "payload is not base64", CLOSE_POLICY) from None
    if kind == "mark":
        mark = message.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        return played_at(name) if isinstance(name, str) else None
    if kind == "stop":
        return Ended()
    return None  # dtmf, and whatever Twilio adds later


def mark_name(message_id: str, ms: int) -> str:
    """The name of the mark sent once `ms` of the reply's audio has been sent."""
    return f"{message_id}@{ms}"


def played_at(name: str) -> Played | None:
    """The `played` report an echoed mark stands for (None for a name we did not make)."""
    message_id, _, ms = name.rpartition("@")
    if not message_id or not ms.isdigit():
        return None
    return Played(message_id, int(ms))


class CallClient:
    """The session's VoiceClient on a Twilio media stream.

    `send` sends one JSON text frame to Twilio and `close` ends the socket; `report` hands the
    session a `played` report (the session's own `control`).
    """

    def __init__(
        self,
        stream_sid: str,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
    ) -> None:
        self._stream_sid = stream_sid
        # A `media` message is written directly: one goes out every 20 ms of every call, and
        # base64 needs no escaping.
        self._media_head = (
            '{"event":"media","streamSid":' + json.dumps(stream_sid) + ',"media":{"payload":"'
        )
        self._send = send
        self._close = close
        self.report: Callable[[Control], Awaitable[bool]] | None = None
        self._reply: str | None = None  # the reply whose audio is being sent
        self._sent = 0  # bytes of its audio sent
        self._marked = 0  # bytes of it covered by a mark
        self._sentence_end = 0  # bytes of it sent once the current sentence is sent whole

    async def send_event(self, text: str) -> None:
        """A session event: audio bookkeeping and `clear` reach Twilio, the rest is logged."""
        event = json.loads(text)
        kind = event["type"]
        if kind == "reply_started":
            self._reply, self._sent, self._marked = str(event["messageId"]), 0, 0
            self._sentence_end = 0
            if self.report is not None:
                # Nothing is heard until a mark comes back: the cut follows marks, not clocks.
                await self.report(Played(self._reply, 0))
        elif kind in ("reply_audio", "reply_stopped") and event["messageId"] != self._reply:
            # A late event of a reply already cleared: the marks follow the current one.
            return
        elif kind == "reply_audio":
            await self._mark(MIN_MARK_MS)  # what of the sentences before is not marked yet
            self._sentence_end = self._sent + round(float(event["ms"]) * _BYTES_PER_MS)
        elif kind == "clear":
            self._reply = None
            await self._send_json({"event": "clear"})
        elif kind == "reply_stopped":
            if event["status"] != "interrupted":
                await self._mark()
            self._reply = None
        elif kind == "error":
            # No words in a noise is routine on a phone line; the rest is worth a look.
            level = logging.DEBUG if event.get("code") == "no_speech" else logging.INFO
            log.log(level, "phone call stream %s: %s", self._stream_sid, event["message"])

    async def send_audio(self, data: bytes) -> None:
        """One frame of reply audio, as a `media` message; a `mark` follows a sentence's last."""
        self._sent += len(data)
        await self._send(self._media_head + base64.b64encode(data).decode() + '"}}')
        if self._sent >= self._sentence_end:
            # Marked at once, not when the next sentence comes: that may be slow to speak.
            await self._mark(MIN_MARK_MS)

    async def close(self, code: int, reason: str) -> None:
        """End the stream's socket."""
        await self._close(code, reason)

    async def _mark(self, at_least_ms: int = 0) -> None:
        unmarked = self._sent - self._marked
        if self._reply is None or unmarked == 0 or unmarked < at_least_ms * _BYTES_PER_MS:
            return
        self._marked = self._sent
        # Rounded up: a played mark covers its sentence whole, never a word short of it.
        name = mark_name(self._reply, -(-self._sent // _BYTES_PER_MS))
        await self._send_json({"event": "mark", "mark": {"name": name}})

    async def _send_json(self, message: dict[str, Any]) -> None:
        await self._send(json.dumps({**message, "streamSid": self._stream_sid}))
