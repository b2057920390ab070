"""Scripts for the fake Realtime provider: how one WebSocket connection behaves.

A script is consumed when a connection opens (FIFO, optionally matched on the model). It says
which event names to speak (GA or beta), how the energy VAD hears, what the user is heard to say
on each committed turn, and what each response does: speak for a while, call functions, fail,
drop the socket or fall silent. Every field is optional; unknown fields are rejected.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Naming = Literal["ga", "beta"]
DEFAULT_TRANSCRIPT = "hello"
DEFAULT_RMS_THRESHOLD = 500.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RealtimeError(_Strict):
    """An `error` event's error object (or a failed response's status_details.error)."""

    type: str = "invalid_request_error"
    code: str | None = None
    message: str = "Scripted error."
    param: str | None = None


class Reject(_Strict):
    """Refuse the WebSocket handshake with an HTTP error."""

    status: int = Field(default=401, ge=400, le=599)
    message: str | None = None
    code: str | None = None


class Vad(_Strict):
    """The energy VAD: RMS of 16-bit samples over 20 ms windows against a threshold."""

    rms_threshold: float = Field(default=DEFAULT_RMS_THRESHOLD, gt=0)
    min_speech_ms: int = Field(default=60, ge=20)
    # None: the session's turn_detection.silence_duration_ms.
    silence_ms: int | None = Field(default=None, ge=20)


class Turn(_Strict):
    """What the fake hears in one committed user audio item."""

    transcript: str = DEFAULT_TRANSCRIPT
    respond: bool = True
    fail: RealtimeError | None = None
    late: bool = False


class FunctionCall(_Strict):
    """One function_call output item of a response."""

    name: str
    arguments: str | dict[str, Any] | list[Any] = "{}"
    call_id: str | None = None

    def arguments_json(self) -> str:
        """The arguments as they go on the wire: a JSON string."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, separators=(",", ":"))


class Usage(_Strict):
    """Overrides for the usage that response.done reports."""

    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    input_text_tokens: int | None = Field(default=None, ge=0)
    input_audio_tokens: int | None = Field(default=None, ge=0)
    output_text_tokens: int | None = Field(default=None, ge=0)
    output_audio_tokens: int | None = Field(default=None, ge=0)


class ResponseScript(_Strict):
    """One response: its spoken text and audio, function calls, pacing and faults."""

    text: str | None = None
    audio_ms: int | None = Field(default=None, ge=0)
    sound: Literal["tone", "speech"] = "tone"
    chunk_ms: int = Field(default=100, ge=10)
    speed: float | None = Field(default=None, gt=0)
    first_delay_ms: int = Field(default=0, ge=0)
    function_calls: list[FunctionCall] = Field(default_factory=list)
    usage: Usage | None = None
    error: RealtimeError | None = None
    error_after_chunks: int | None = Field(default=None, ge=0)
    drop_after_chunks: int | None = Field(default=None, ge=0)
    close_after_chunks: int | None = Field(default=None, ge=0)
    close_code: int = Field(default=1011, ge=1000, le=4999)
    silent_after_chunks: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _error_needed(self) -> ResponseScript:
        if self.error_after_chunks is not None and self.error is None:
            raise ValueError("error_after_chunks needs an error")
        return self


class Script(_Strict):
    """How one Realtime connection behaves."""

    match: str | None = None
    # None means the script is never used up.
    times: int | None = Field(default=1, ge=1)
    naming: Naming | None = None
    reject: Reject | None = None
    vad: Vad = Field(default_factory=Vad)
    transcribe: Literal["configured", "always", "never"] = "configured"
    # Accept the socket, then never send anything (not even session.created).
    silent: bool = False
    turns: list[Turn] = Field(default_factory=list)
    responses: list[ResponseScript] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _turn_strings(cls, data: Any) -> Any:
        # A bare string is the common case: just what the user said.
        if isinstance(data, Mapping) and isinstance(data.get("turns"), list):
            turns = [{"transcript": t} if isinstance(t, str) else t for t in data["turns"]]
            return {**data, "turns": turns}
        return data


ScriptInput = Script | Mapping[str, Any]


def parse_scripts(items: Iterable[ScriptInput | Iterable[ScriptInput]]) -> list[Script]:
    """Validate scripts given as Script objects, dicts, or (nested once) lists of them."""
    scripts: list[Script] = []
    for item in items:
        if isinstance(item, Script | Mapping):
            scripts.append(_one(item))
        else:
            scripts.extend(_one(inner) for inner in item)
    return scripts


def _one(item: ScriptInput) -> Script:
    return item if isinstance(item, Script) else Script.model_validate(item)
