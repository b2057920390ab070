"""The audio socket's JSON messages (DESIGN §9): what a client may send, and the events sent back.

A client first sends `start`, then binary audio frames and the control messages `played`,
`text` and `stop`. Anything else is a ProtocolError: it names the `error` event to send and,
when the session cannot go on, the WebSocket close code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from voicestack import jsoncodec

SAMPLE_RATES = (16000, 24000, 8000)
FORMATS = ("pcm16", "mulaw")
MAX_FRAME_BYTES = 64 * 1024
MAX_TEXT_CHARS = 20_000

# WebSocket close codes: RFC 6455's, and ours in the 4000 range (HTTP status + 4000).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_BAD_TOKEN = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY = 4429

AudioFormatName = Literal["pcm16", "mulaw"]


class ProtocolError(Exception):
    """A message the session refuses: sent as an `error` event, then closed if `close` is set."""

    def __init__(self, code: str, message: str, close: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close


@dataclass(frozen=True, slots=True)
class Start:
    """The session's audio: its sample rate and sample format, both ways."""

    sample_rate: int
    format: AudioFormatName


@dataclass(frozen=True, slots=True)
class Played:
    """How much of a reply's audio the client has played, in ms from its start."""

    message_id: str
    ms: int


@dataclass(frozen=True, slots=True)
class TypedText:
    """A typed turn."""

    text: str


@dataclass(frozen=True, slots=True)
class Stop:
    """The client ends the session."""


Control = Played | TypedText | Stop


def _object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(
            "invalid_json", "A text frame must be one JSON object.", CLOSE_POLICY
        ) from None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ProtocolError(
            "invalid_message", 'A message must be a JSON object with a "type".', CLOSE_POLICY
        )
    return value


def parse_start(text: str) -> Start:
    """The `start` message the session must begin with."""
    message = _object(text)
    if message["type"] != "start":
        raise ProtocolError(
            "start_expected",
            'The first message must be {"type": "start", "sampleRate", "format"}.',
            CLOSE_POLICY,
        )
    rate, fmt = message.get("sampleRate"), message.get("format")
    if type(rate) is not int or rate not in SAMPLE_RATES:
        raise ProtocolError(
            "unsupported_sample_rate", "sampleRate must be 16000, 24000 or 8000.", CLOSE_POLICY
        )
    if fmt == "pcm16":
        return Start(rate, "pcm16")
    if fmt == "mulaw":
        return Start(rate, "mulaw")
    raise ProtocolError("unsupported_format", 'format must be "pcm16" or "mulaw".', CLOSE_POLICY)


def parse_control(text: str) -> Control:
    """A control message sent after `start`; errors that need no close have `close` None."""
    message = _object(text)
    kind = message["type"]
    if kind == "played":
        message_id, ms = message.get("messageId"), message.get("ms")
        if not isinstance(message_id, str) or type(ms) is not int or ms < 0:
            raise ProtocolError(
                "invalid_message", 'played needs "messageId" (a string) and "ms" (an integer ≥ 0).'
            )
        return Played(message_id, ms)
    if kind == "text":
        typed = message.get("text")
        if not isinstance(typed, str) or not typed.strip() or len(typed) > MAX_TEXT_CHARS:
            raise ProtocolError(
                "invalid_message", f'text needs "text": 1 to {MAX_TEXT_CHARS} characters.'
            )
        return TypedText(typed.strip())
    if kind == "stop":
        return Stop()
    if kind == "start":
        raise ProtocolError("already_started", "The session has started already.")
    raise ProtocolError(
        "unknown_message", "Messages are start, played, text and stop; audio goes in binary frames."
    )


def event(kind: str, **fields: Any) -> str:
    """An event to the client: a JSON object whose `type` is `kind`."""
    return jsoncodec.dumps({"type": kind, **fields}).decode()
