"""Agent rows as the API shows them (camelCase), and the thread-feed events that announce them."""

from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

from voicestack import jsoncodec
from voicestack.auth.users import user_by_id
from voicestack.store.db import ReadDB, WriteDB

AnyDB = ReadDB | WriteDB

MESSAGE_COLUMNS = (
    "id, thread_id, position, role, text, status, error_code, error_message, author, reply_to,"
    " prompt_tokens, completion_tokens, tool_call_count, wall_ms, created_at, updated_at,"
    " audio_file_id, audio_in_seconds, speech_chars, speech_seconds, voice, agent, cost_usd,"
    " unreported_steps, recalled"
)
ENDED = ("complete", "failed", "interrupted")
TOOL_CALL_COLUMNS = (
    "id, thread_id, message_id, call_id, step, name, args, status, progress, result, error,"
    " created_at, updated_at"
)


def now() -> float:
    """The current time as stored in the database (seconds since the epoch)."""
    return time.time()


def _json_or_text(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def streamed_text(db: AnyDB, message_id: str) -> str:
    """The text a reply has streamed so far, from its committed deltas."""
    text = db.scalar(
        "SELECT group_concat(json_extract(data, '$.text'), '' ORDER BY id) FROM thread_events"
        " WHERE ref = ? AND kind = 'delta'",
        (message_id,),
    )
    return text or ""


def message_from_row(
    db: AnyDB, row: dict[str, Any], author_name: str | None = None
) -> dict[str, Any]:
    """A messages row as the API shows it; a streaming reply's text is what has streamed, and
    `authorName` is its author's name as it is now (None without an author; `author_name` when
    the caller knows it, else read), `agent` the agent that wrote it (None for a person's
    message), and `voice` the per-turn metrics of a reply spoken in a live conversation (None
    for any other message)."""
    text = row["text"]
    if row["status"] == "streaming" and not text:
        text = streamed_text(db, row["id"])
    error = None
    if row["error_code"]:
        error = {"code": row["error_code"], "message": row["error_message"] or ""}
    return {
        "id": row["id"],
        "threadId": row["thread_id"],
        "role": row["role"],
        "text": text,
        "status": row["status"],
        "error": error,
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
        "order": row["position"],
        "author": row["author"],
        "authorName": author_name if author_name is not None else _author_name(db, row["author"]),
        "agent": row["agent"],
        "replyTo": row["reply_to"],
        "audioFileId": row["audio_file_id"],
        "usage": {
            "promptTokens": row["prompt_tokens"],
            "completionTokens": row["completion_tokens"],
            "toolCalls": row["tool_call_count"],
            "wallMs": row["wall_ms"],
            "audioInSeconds": round(row["audio_in_seconds"], 3),
            "speechChars": row["speech_chars"],
            "speechSeconds": round(row["speech_seconds"], 3),
            # Model calls whose token counts never came (the reply ended mid-step); a step still
            # streaming is not counted until the reply ends without them.
            "unreportedSteps": row["unreported_steps"] if row["status"] in ENDED else 0,
            # A reply's parts, priced when it ended (voicestack/agent/cost.py); None otherwise.
            "costUsd": row["cost_usd"],
            # What the reply recalled from its user's other threads (voicestack/agent/recall.py);
            # only replies of an agent with recall have it.
            **({"recalled": json.loads(row["recalled"])} if row.get("recalled") else {}),
        },
        "voice": json.loads(row["voice"]) if row["voice"] else None,
    }


def _author_name(db: AnyDB, user_id: str | None) -> str | None:
    author = user_by_id(db, user_id) if user_id else None
    return author.name if author else None


def tool_call_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A tool_calls row as the API shows it."""
    return {
        "id": row["id"],
        "threadId": row["thread_id"],
        "messageId": row["message_id"],
        "callId": row["call_id"],
        "step": row["step"],
        "name": row["name"],
        "args": _json_or_text(row["args"]),
        "status": row["status"],
        "progress": _json_or_text(row["progress"]),
        "result": _json_or_text(row["result"]),
        "error": row["error"],
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
    }


def thread_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A threads row as the API shows it."""
    return {
        "id": row["id"],
        "title": row["title"],
        "owner": row["owner"],
        "agent": row["agent"],
        # Where the thread came from, e.g. a phone call's number and SID; None for API threads.
        "metadata": json.loads(row["metadata"]) if row["metadata"] else None,
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
    }


def load_message(db: AnyDB, message_id: str) -> dict[str, Any] | None:
    """One message in API shape, or None."""
    row = db.one(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,))
    return message_from_row(db, row) if row else None


def load_tool_call(db: AnyDB, call_id: str) -> dict[str, Any] | None:
    """One tool call in API shape, or None."""
    row = db.one(f"SELECT {TOOL_CALL_COLUMNS} FROM tool_calls WHERE id = ?", (call_id,))
    return tool_call_from_row(row) if row else None


class EventRow(NamedTuple):
    """A `thread_events` row as its insert wrote it, handed to the feed with the commit."""

    thread_id: str
    kind: str
    data: bytes  # the event's JSON


def emit(db: WriteDB, thread_id: str, kind: str, ref: str, data: dict[str, Any]) -> int:
    """Append one event to the thread feed (in the caller's transaction); returns its id."""
    encoded = jsoncodec.dumps(data)
    event_id = db.execute(
        "INSERT INTO thread_events(thread_id, kind, ref, data) VALUES (?, ?, ?, ?)",
        (thread_id, kind, ref, encoded.decode()),
    ).last_rowid
    # The feed sends it from memory once committed, without reading it back.
    db.remember("thread_events", event_id, EventRow(thread_id, kind, encoded))
    return event_id


def emit_message(db: WriteDB, message_id: str) -> dict[str, Any]:
    """Announce a message's current row on its thread's feed; returns the row."""
    message = load_message(db, message_id)
    assert message is not None, f"message {message_id} vanished inside its own transaction"
    emit(db, message["threadId"], "message", message_id, message)
    return message


def emit_tool_call(db: WriteDB, call_id: str) -> dict[str, Any]:
    """Announce a tool call's current row on its thread's feed; returns the row."""
    call = load_tool_call(db, call_id)
    assert call is not None, f"tool call {call_id} vanished inside its own transaction"
    emit(db, call["threadId"], "tool_call", call_id, call)
    return call


def emit_delta(db: WriteDB, thread_id: str, message_id: str, text: str, seq: int) -> int:
    """Append streamed text of a reply to its thread's feed."""
    return emit(
        db, thread_id, "delta", message_id, {"messageId": message_id, "text": text, "seq": seq}
    )
