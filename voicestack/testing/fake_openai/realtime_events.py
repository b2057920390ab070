"""Shapes of the fake Realtime provider's events: sessions, items, usage, errors, GA/beta names."""

from __future__ import annotations

import time
from typing import Any

from voicestack.testing.fake_openai.realtime_audio import Codec
from voicestack.testing.fake_openai.realtime_script import Naming, RealtimeError
from voicestack.testing.fake_openai.wire import new_id

DEFAULT_SILENCE_MS = 500
_SESSION_TTL_S = 1800

# GA event names whose beta spelling differs.
_BETA_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}
_GA_CODECS: dict[str, Codec] = {"audio/pcm": "pcm16", "audio/pcmu": "ulaw", "audio/pcma": "alaw"}
_BETA_CODECS: dict[str, Codec] = {"pcm16": "pcm16", "g711_ulaw": "ulaw", "g711_alaw": "alaw"}


class Refuse(Exception):
    """A client event the real server would answer with an `error` event."""

    def __init__(self, error: RealtimeError) -> None:
        """Carry the error to send."""
        super().__init__(error.message)
        self.error = error


def event_name(ga_name: str, naming: Naming) -> str:
    """The wire name of a GA-named event under `naming`."""
    return _BETA_NAMES.get(ga_name, ga_name) if naming == "beta" else ga_name


def event(ga_name: str, naming: Naming, /, **fields: Any) -> dict[str, Any]:
    """A server event with a fresh event_id, named for `naming`."""
    return {"type": event_name(ga_name, naming), "event_id": new_id("event_", 21), **fields}


def error_event(error: RealtimeError, client_event_id: str | None = None) -> dict[str, Any]:
    """The `error` server event, naming the client event that caused it (if any)."""
    body = {**error.model_dump(), "event_id": client_event_id}
    return {"type": "error", "event_id": new_id("event_", 21), "error": body}


def invalid(message: str, code: str | None = None, param: str | None = None) -> RealtimeError:
    """An invalid_request_error as the real server words its complaints."""
    return RealtimeError(type="invalid_request_error", code=code, message=message, param=param)


def _server_vad() -> dict[str, Any]:
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": DEFAULT_SILENCE_MS,
        "create_response": True,
        "interrupt_response": True,
    }


def initial_session(model: str, naming: Naming) -> dict[str, Any]:
    """The session that session.created announces, in the GA or the beta shape."""
    common = {
        "id": new_id("sess_", 21),
        "object": "realtime.session",
        "model": model,
        "expires_at": int(time.time()) + _SESSION_TTL_S,
        "instructions": "",
        "tools": [],
        "tool_choice": "auto",
        "tracing": None,
    }
    if naming == "beta":
        return {
            **common,
            "modalities": ["audio", "text"],
            "voice": "alloy",
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "input_audio_transcription": None,
            "turn_detection": _server_vad(),
            "temperature": 0.8,
            "max_response_output_tokens": "inf",
        }
    return {
        "type": "realtime",
        **common,
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {**_server_vad(), "idle_timeout_ms": None},
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": "alloy",
                "speed": 1.0,
            },
        },
    }


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` with `update` laid over it, objects merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "format":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


class SessionView:
    """Reads the settings the fake needs from a session in either shape."""

    def __init__(self, session: dict[str, Any], naming: Naming) -> None:
        """Wrap `session` (not copied) as spoken under `naming`."""
        self.session, self.naming = session, naming

    def _audio(self, side: str) -> dict[str, Any]:
        audio = self.session.get("audio")
        part = audio.get(side) if isinstance(audio, dict) else None
        return part if isinstance(part, dict) else {}

    def codec(self, side: str) -> Codec:
        """The codec of the "input" or "output" audio."""
        if self.naming == "beta":
            return _BETA_CODECS.get(str(self.session.get(f"{side}_audio_format")), "pcm16")
        fmt = self._audio(side).get("format")
        return _GA_CODECS.get(str(fmt.get("type")) if isinstance(fmt, dict) else "", "pcm16")

    def turn_detection(self) -> dict[str, Any] | None:
        """The turn detection settings, or None when the client turned VAD off."""
        found = (
            self.session.get("turn_detection")
            if self.naming == "beta"
            else self._audio("input").get("turn_detection")
        )
        return found if isinstance(found, dict) else None

    def transcribes(self) -> bool:
        """Whether the client asked for transcripts of its audio."""
        if self.naming == "beta":
            return self.session.get("input_audio_transcription") is not None
        return self._audio("input").get("transcription") is not None

    def format_of_output(self) -> dict[str, Any]:
        """The output format object a GA response announces."""
        fmt = self._audio("output").get("format")
        return fmt if isinstance(fmt, dict) else {"type": "audio/pcm", "rate": 24000}


def user_audio_item(item_id: str, transcript: str | None = None) -> dict[str, Any]:
    """A committed user audio message item."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }


def assistant_item(
    item_id: str, naming: Naming, status: str, transcript: str | None
) -> dict[str, Any]:
    """An assistant audio message item: empty while in progress, its transcript once done."""
    content = (
        []
        if transcript is None
        else [{"type": "audio" if naming == "beta" else "output_audio", "transcript": transcript}]
    )
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    """A function_call item of a response."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "name": name,
        "call_id": call_id,
        "arguments": arguments,
    }


def usage_object(
    input_text: int, input_audio: int, output_text: int, output_audio: int
) -> dict[str, Any]:
    """response.done's usage object from its four token counts."""
    input_tokens, output_tokens = input_text + input_audio, output_text + output_audio
    return {
        "total_tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_token_details": {
            "text_tokens": input_text,
            "audio_tokens": input_audio,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0},
        },
        "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio},
    }
