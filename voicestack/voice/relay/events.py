"""The provider's events as the relay reads them, and the client events it sends back.

OpenAI's Realtime API renamed some server events when it left beta: `response.audio.delta`
became `response.output_audio.delta`, `response.audio_transcript.delta` became
`response.output_audio_transcript.delta`, and so on. Compatible servers speak either, so every
event is read under its GA name (`normalized`), and the relay only ever matches GA names.
"""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

# Beta name → GA name, for the events whose name changed.
_GA_NAMES = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "conversation.item.created": "conversation.item.added",
}
# Errors that only say a cancel or truncate came too late: nothing is wrong with the turn.
HARMLESS_ERRORS = frozenset({"response_cancel_not_active"})
# The event ids of the relay's barge-in events (truncate, cancel): an error caused by one of
# them concerns the reply already cut, never the turn under way.
AFTERMATH = "relay_aftermath_"
_aftermath_ids = itertools.count(1)


class BadEvent(Exception):
    """A provider frame that is not a JSON object with a string `type`."""


def normalized(text: str | bytes) -> dict[str, Any]:
    """A provider event, its `type` under the GA name; raises BadEvent for anything else."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise BadEvent("not JSON") from None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise BadEvent("not an event object")
    value["type"] = _GA_NAMES.get(value["type"], value["type"])
    return value


def audio_of(event: dict[str, Any]) -> bytes:
    """The audio bytes of a `response.output_audio.delta` (empty when it carries none)."""
    delta = event.get("delta")
    if not isinstance(delta, str):
        return b""
    try:
        return base64.b64decode(delta)
    except ValueError:
        return b""


def text_of(event: dict[str, Any], key: str = "delta") -> str:
    """A string field of an event, or "" when it is missing or not a string."""
    value = event.get(key)
    return value if isinstance(value, str) else ""


def cancel(response_id: str | None) -> dict[str, Any]:
    """`response.cancel` of the response being spoken over, named when its id is known: by the
    time it arrives, the provider may have ended that response and begun the next, which an
    unnamed cancel would stop instead."""
    event: dict[str, Any] = {
        "type": "response.cancel",
        "event_id": f"{AFTERMATH}{next(_aftermath_ids)}",
    }
    if response_id is not None:
        event["response_id"] = response_id
    return event


def is_aftermath(event: dict[str, Any]) -> bool:
    """True for an `error` caused by a barge-in's truncate or cancel."""
    error = event.get("error")
    caused_by = error.get("event_id") if isinstance(error, dict) else None
    return isinstance(caused_by, str) and caused_by.startswith(AFTERMATH)


def error_of(event: dict[str, Any]) -> tuple[str, str]:
    """(code, message) of an `error` event, or of a failed `response.done`'s status details."""
    error = event.get("error")
    if not isinstance(error, dict):
        response = event.get("response")
        details = response.get("status_details") if isinstance(response, dict) else None
        error = details.get("error") if isinstance(details, dict) else None
    if not isinstance(error, dict):
        return "realtime_error", "The realtime provider reported an error without details."
    code = error.get("code") or error.get("type") or "realtime_error"
    message = error.get("message") or "The realtime provider reported an error."
    return str(code), str(message)


def usage_of(event: dict[str, Any]) -> tuple[int, int] | None:
    """(input tokens, output tokens) of a `response.done`, or None when it reports none."""
    response = event.get("response")
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
    if type(prompt) is not int or type(completion) is not int:
        return None
    return prompt, completion


def response_status(event: dict[str, Any]) -> str:
    """The final status of a `response.done`: completed, cancelled, failed or incomplete."""
    response = event.get("response")
    status = response.get("status") if isinstance(response, dict) else None
    return status if isinstance(status, str) else "completed"


def append_audio_text(audio: bytes) -> str:
    """`input_audio_buffer.append` of `audio` as JSON text, written directly: base64 needs no
    escaping, and the JSON encoder was a tenth of the relay's time per frame."""
    return '{"type":"input_audio_buffer.append","audio":"' + base64.b64encode(audio).decode() + '"}'


def user_text(text: str) -> dict[str, Any]:
    """`conversation.item.create` of a typed user message."""
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        },
    }


def function_output(call_id: str, output: str) -> dict[str, Any]:
    """`conversation.item.create` of a function call's result."""
    return {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": call_id, "output": output},
    }


def truncate(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    """`conversation.item.truncate`: the assistant's audio item was heard up to `audio_end_ms`."""
    return {
        "type": "conversation.item.truncate",
        "event_id": f"{AFTERMATH}{next(_aftermath_ids)}",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": audio_end_ms,
    }
