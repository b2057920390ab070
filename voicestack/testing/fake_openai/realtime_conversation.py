"""Session and conversation events of a fake Realtime connection: session.update, items,
responses, cancels and truncations."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from voicestack.testing.fake_openai.realtime_events import Refuse, event, invalid, merge
from voicestack.testing.fake_openai.realtime_response import ResponseRun
from voicestack.testing.fake_openai.realtime_script import ResponseScript
from voicestack.testing.fake_openai.wire import dumps, new_id

if TYPE_CHECKING:
    from voicestack.testing.fake_openai.realtime_connection import Connection


# The GA session's fields (the real API answers any other with `unknown_parameter`).
_GA_FIELDS: dict[str, tuple[str, ...]] = {
    "session": (
        "type",
        "model",
        "instructions",
        "output_modalities",
        "audio",
        "include",
        "max_output_tokens",
        "prompt",
        "reasoning",
        "tool_choice",
        "tools",
        "tracing",
        "truncation",
        "parallel_tool_calls",
        "id",
        "object",
        "expires_at",
    ),
    "session.audio": ("input", "output"),
    "session.audio.input": ("format", "noise_reduction", "transcription", "turn_detection"),
    "session.audio.output": ("format", "voice", "speed"),
}

# The beta session's fields: a GA-shaped update (`type`, `audio`, ...) is refused likewise.
_BETA_FIELDS = frozenset(
    {
        "model",
        "modalities",
        "instructions",
        "voice",
        "input_audio_format",
        "output_audio_format",
        "input_audio_transcription",
        "input_audio_noise_reduction",
        "turn_detection",
        "tools",
        "tool_choice",
        "temperature",
        "max_response_output_tokens",
        "speed",
        "tracing",
        "include",
        "id",
        "object",
        "expires_at",
    }
)


def unknown_beta_parameter(update: dict[str, Any]) -> str | None:
    """The dotted path of the first field a beta session.update may not carry, if any."""
    return next((f"session.{key}" for key in update if key not in _BETA_FIELDS), None)


def unknown_ga_parameter(update: dict[str, Any], path: str = "session") -> str | None:
    """The dotted path of the first field a GA session.update may not carry, if any."""
    for key, value in update.items():
        if key not in _GA_FIELDS[path]:
            return f"{path}.{key}"
        inner = f"{path}.{key}"
        if inner in _GA_FIELDS and isinstance(value, dict):
            found = unknown_ga_parameter(value, inner)
            if found is not None:
                return found
    return None


async def session_update(conn: Connection, message: dict[str, Any]) -> None:
    """session.update: validate, merge into the session, answer session.updated."""
    update = message.get("session")
    if not isinstance(update, dict):
        raise Refuse(
            invalid(
                "Missing required parameter: 'session'.",
                "missing_required_parameter",
                "session",
            )
        )
    if conn.naming == "ga" and update.get("type") != "realtime":
        if "type" not in update:
            error = invalid(
                "Missing required parameter: 'session.type'.",
                "missing_required_parameter",
                "session.type",
            )
        else:
            error = invalid(
                f"Invalid value: '{update.get('type')}'. Supported values are: 'realtime'.",
                "invalid_value",
                "session.type",
            )
        raise Refuse(error)
    unknown = (
        unknown_ga_parameter(update) if conn.naming == "ga" else unknown_beta_parameter(update)
    )
    if unknown is not None:
        raise Refuse(invalid(f"Unknown parameter: '{unknown}'.", "unknown_parameter", unknown))
    fixed = {k: v for k, v in update.items() if k not in ("id", "object", "expires_at")}
    merged = merge(conn.snapshot(), fixed)
    conn.session.clear()
    conn.session.update(merged)
    instructions = conn.session.get("instructions")
    if isinstance(instructions, str):
        conn.input_text_tokens = len(instructions.split())
    conn.state.update(conn.record, lambda r: r.update(session=json.loads(dumps(conn.session))))
    await conn.send(event("session.updated", conn.naming, session=conn.session))


async def item_create(conn: Connection, message: dict[str, Any]) -> None:
    """conversation.item.create: add a message or function_call_output item."""
    item = message.get("item")
    if not isinstance(item, dict) or item.get("type") not in (
        "message",
        "function_call_output",
        "function_call",
    ):
        raise Refuse(
            invalid(
                "Invalid 'item': expected a message, function_call or function_call_output.",
                "invalid_value",
                "item",
            )
        )
    if item["type"] == "function_call_output":
        known = {i["call_id"] for i in conn.items.values() if i["call_id"]}
        if item.get("call_id") not in known:
            raise Refuse(
                invalid(
                    f"Tool call ID '{item.get('call_id')}' not found in conversation.",
                    "invalid_value",
                    "item.call_id",
                )
            )
        conn.log(
            "function_call_outputs", {"call_id": item["call_id"], "output": item.get("output")}
        )
    elif item["type"] == "message":
        texts = [p.get("text") for p in item.get("content") or [] if isinstance(p, dict)]
        said = " ".join(t for t in texts if isinstance(t, str))
        conn.input_text_tokens += len(said.split())
        if item.get("role") == "user" and said:
            conn.last_said = said
    given = item.get("id")
    item_id = given if isinstance(given, str) else new_id("item_", 21)
    previous = conn.add_item(item_id, str(item["type"]), item.get("call_id"))
    await item_added(
        conn, previous, {**item, "id": item_id, "object": "realtime.item", "status": "completed"}
    )


async def item_added(conn: Connection, previous: str | None, item: dict[str, Any]) -> None:
    """Announce an added item: conversation.item.added (+ .done in GA), or .created in beta."""
    await conn.send(
        event("conversation.item.added", conn.naming, previous_item_id=previous, item=item)
    )
    if conn.naming == "ga":
        await conn.send(
            event("conversation.item.done", conn.naming, previous_item_id=previous, item=item)
        )


async def response_create(conn: Connection, message: dict[str, Any]) -> None:
    """response.create: start the next scripted response unless one is active."""
    if conn.active is not None:
        text = (
            "Conversation already has an active response in progress: "
            f"{conn.active[0].id}. Wait until the response is finished before creating "
            "a new one."
        )
        raise Refuse(invalid(text, "conversation_already_has_active_response"))
    await respond(conn, message, [])


async def respond(
    conn: Connection, message: dict[str, Any] | None, after_created: list[dict[str, Any]]
) -> None:
    """Start the next scripted response (or answer its scripted error); `after_created` events
    go out right after response.created."""
    plan = conn.responses.pop(0) if conn.responses else ResponseScript()
    if plan.error is not None and plan.error_after_chunks is None:
        for late in after_created:
            await conn.send(late)
        await conn.error(plan.error, message or {})
        return
    said = conn.last_said.strip()
    text = (
        plan.text
        if plan.text is not None
        else (f"You said: {said}" if said else "You said nothing.")
    )
    run = ResponseRun(conn, plan, text)
    task = asyncio.create_task(_run(conn, run, after_created))
    conn.active = (run, task)


async def _run(conn: Connection, run: ResponseRun, after_created: list[dict[str, Any]]) -> None:
    try:
        await run.run(after_created)
    finally:
        if conn.active is not None and conn.active[0] is run:
            conn.active = None


async def cancel(conn: Connection, message: dict[str, Any]) -> None:
    """response.cancel: end the active response as cancelled; one naming another response
    (`response_id`) is refused as not active, and the active one goes on."""
    named = message.get("response_id")
    if conn.active is None or (named is not None and named != conn.active[0].id):
        raise Refuse(
            invalid("Cancellation failed: no active response found", "response_cancel_not_active")
        )
    await stop_active(conn, "client_cancelled")


async def stop_active(conn: Connection, reason: str) -> None:
    """Cancel the active response for `reason` and wait until its last event went out."""
    if conn.active is None:
        return
    run, task = conn.active
    await run.cancel(reason)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def truncate(conn: Connection, message: dict[str, Any]) -> None:
    """conversation.item.truncate: record it and answer conversation.item.truncated."""
    item_id, end = message.get("item_id"), message.get("audio_end_ms")
    item = conn.items.get(item_id) if isinstance(item_id, str) else None
    if item is None or item["kind"] != "assistant":
        raise Refuse(invalid(f"Item with item_id not found: {item_id}", "invalid_value", "item_id"))
    if not isinstance(end, int) or isinstance(end, bool) or end < 0:
        raise Refuse(
            invalid(
                "Invalid 'audio_end_ms': expected a non-negative integer.",
                "invalid_value",
                "audio_end_ms",
            )
        )
    if end > item["audio_ms"]:
        text = f"Audio content of {item['audio_ms']}ms is already shorter than {end}ms"
        raise Refuse(invalid(text, "invalid_value", "audio_end_ms"))
    index = message.get("content_index", 0)
    conn.log(
        "truncations",
        {
            "item_id": item_id,
            "content_index": index,
            "audio_end_ms": end,
            "item_audio_ms": item["audio_ms"],
        },
    )
    item["audio_ms"] = end
    await conn.send(
        event(
            "conversation.item.truncated",
            conn.naming,
            item_id=item_id,
            content_index=index,
            audio_end_ms=end,
        )
    )


async def delete(conn: Connection, message: dict[str, Any]) -> None:
    """conversation.item.delete: forget the item and answer conversation.item.deleted."""
    item_id = message.get("item_id")
    if not isinstance(item_id, str) or conn.items.pop(item_id, None) is None:
        raise Refuse(invalid(f"Item with item_id not found: {item_id}", "invalid_value", "item_id"))
    await conn.send(event("conversation.item.deleted", conn.naming, item_id=item_id))
