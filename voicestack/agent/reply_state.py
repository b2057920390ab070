"""The writes a reply makes as it runs: claim, text deltas, tool-call rows, the final status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voicestack import jsoncodec
from voicestack.agent.agents import DEFAULT_AGENT
from voicestack.agent.cost import Pricing, price_reply
from voicestack.agent.records import (
    emit_delta,
    emit_message,
    emit_tool_call,
    now,
    streamed_text,
)
from voicestack.agent.reply_jobs import claim_reply_job
from voicestack.agent.reply_parts import add_tool_calls, open_part
from voicestack.ids import new_id
from voicestack.store.db import WriteDB

# The error code of a reply the listener spoke over (voice barge-in): its text was cut to what
# they heard, and that text is kept when the reply's task finishes afterwards.
HEARD_CUT = "barge_in"
# A live conversation ended by a server shutdown keeps what was spoken, like a barge-in.
SHUTDOWN_CUT = "server_stopped"
CUT_TO_HEARD = frozenset({HEARD_CUT, SHUTDOWN_CUT})


@dataclass(frozen=True, slots=True)
class Claim:
    """A reply this process now streams, with what it needs to answer."""

    message_id: str
    thread_id: str
    position: int
    author: str | None
    speak: bool = False  # speak the reply sentence by sentence as it streams (POST /voice)
    agent: str = DEFAULT_AGENT  # the thread's agent when the reply was claimed


def claim_next(
    db: WriteDB, thread_id: str, models: Mapping[str, str] | None = None
) -> Claim | None:
    """Mark the thread's oldest pending reply `streaming` and return it (its `streaming`
    message event goes out with its first output, or its final status if it has none).

    The reply is written by the thread's agent as it is now, with that agent's model from
    `models` (agent name → model), both recorded on its row, and its first usage part opens
    with the transcribed audio of the message it answers.

    None when nothing is pending, or when a reply of the thread is already streaming: replies of
    one thread run one at a time, in order.
    """
    rows = db.all(
        "SELECT m.id, m.status, m.position, m.speak, m.model, u.author,"
        " coalesce(u.audio_in_seconds, 0) AS audio_in FROM messages m"
        " LEFT JOIN messages u ON u.id = m.reply_to"
        " WHERE m.thread_id = ? AND m.role = 'assistant' AND m.status IN ('pending', 'streaming')"
        " ORDER BY m.position LIMIT 1",
        (thread_id,),
    )
    if not rows or rows[0]["status"] != "pending":
        return None
    row = rows[0]
    agent: str = db.scalar("SELECT agent FROM threads WHERE id = ?", (thread_id,))
    model = (models or {}).get(agent) or row["model"]
    db.execute(
        "UPDATE messages SET status = 'streaming', agent = ?, model = ?, updated_at = ?"
        " WHERE id = ?",
        (agent, model, now(), row["id"]),
    )
    open_part(db, row["id"], agent, model, row["audio_in"])
    claim_reply_job(db, row["id"])
    # No message event here: the reply's first output carries it (Reply._write_output).
    speak = bool(row["speak"])
    return Claim(row["id"], thread_id, row["position"], row["author"], speak, agent)


def still_streaming(db: WriteDB, message_id: str) -> bool:
    """True while nobody has cancelled or handed off the reply."""
    status: str | None = db.scalar("SELECT status FROM messages WHERE id = ?", (message_id,))
    return status == "streaming"


def append_delta(db: WriteDB, claim: Claim, text: str, seq: int) -> bool:
    """Save streamed text, unless the reply was stopped meanwhile (then False: stop streaming)."""
    if not still_streaming(db, claim.message_id):
        return False
    emit_delta(db, claim.thread_id, claim.message_id, text, seq)
    return True


def fail_unfinished_tool_calls(db: WriteDB, message_id: str, reason: str) -> None:
    """Fail every call of a stopped reply that had not finished, so none waits forever."""
    rows = db.all(
        "SELECT id FROM tool_calls WHERE message_id = ?"
        " AND status IN ('pending', 'awaiting_approval', 'running')",
        (message_id,),
    )
    for row in rows:
        update_tool_call(db, row["id"], status="failed", error=reason)


def finish_reply(
    db: WriteDB,
    claim: Claim,
    status: str,
    wall_ms: int,
    error: tuple[str, str] | None = None,
    pricing: Pricing | None = None,
) -> None:
    """Consolidate the reply's text and set its final status and time taken, once (its tokens
    and tool calls were added as they came, voicestack/agent/reply_parts.py).

    The text is what the reply committed, read in this transaction, so a piece saved just as the
    reply was cancelled is kept too. A reply someone already stopped keeps that status, and one
    cut to what the listener heard (CUT_TO_HEARD) keeps that text. With `pricing`, the turn's
    cost is fixed too, before the final `message` event that shows it.
    """
    row = db.one("SELECT status, text, error_code FROM messages WHERE id = ?", (claim.message_id,))
    if row is None:
        return
    current = row["status"]
    cut = current == "interrupted" and row["error_code"] in CUT_TO_HEARD
    text = row["text"] if cut else streamed_text(db, claim.message_id)
    final = status if current == "streaming" else current
    if final != "complete":
        fail_unfinished_tool_calls(db, claim.message_id, f"Not finished: the reply was {final}.")
    code, message = error if error and current == "streaming" else (None, None)
    db.execute(
        "UPDATE messages SET status = ?, text = ?, wall_ms = ?, updated_at = ?,"
        " error_code = coalesce(?, error_code), error_message = coalesce(?, error_message)"
        " WHERE id = ?",
        (
            final,
            text,
            wall_ms,
            now(),
            code,
            message,
            claim.message_id,
        ),
    )
    if pricing is not None:
        price_reply(db, claim.message_id, pricing)
    db.execute("UPDATE threads SET updated_at = ? WHERE id = ?", (now(), claim.thread_id))
    emit_message(db, claim.message_id)


@dataclass(frozen=True, slots=True)
class NewToolCall:
    """A tool call the model asked for, about to become a row."""

    call_id: str
    name: str
    arguments: str
    status: str
    error: str | None = None


def insert_tool_calls(db: WriteDB, claim: Claim, step: int, calls: list[NewToolCall]) -> list[str]:
    """Create the rows of one step's tool calls, announce them, and return their ids."""
    ids = []
    for call in calls:
        row_id = new_id("call")
        stamp = now()
        db.execute(
            "INSERT INTO tool_calls(id, thread_id, message_id, call_id, step, name, args, status,"
            " error, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row_id,
                claim.thread_id,
                claim.message_id,
                call.call_id,
                step,
                call.name,
                call.arguments,
                call.status,
                call.error,
                stamp,
                stamp,
            ),
        )
        emit_tool_call(db, row_id)
        ids.append(row_id)
    add_tool_calls(db, claim.message_id, len(calls))
    return ids


def update_tool_call(db: WriteDB, row_id: str, **fields: Any) -> str | None:
    """Change a tool call's status, progress, result or error; returns its status before."""
    before = tool_call_status(db, row_id)
    if before is None:
        return None
    columns = {"status", "progress", "result", "error"}
    assignments = []
    values: list[Any] = []
    for name, value in fields.items():
        if name not in columns:
            raise ValueError(f"tool_calls has no settable column {name!r}")
        if name in ("progress", "result") and value is not None:
            value = jsoncodec.dumps(value).decode()
        assignments.append(f"{name} = ?")
        values.append(value)
    db.execute(
        f"UPDATE tool_calls SET {', '.join(assignments)}, updated_at = ? WHERE id = ?",
        (*values, now(), row_id),
    )
    emit_tool_call(db, row_id)
    return before


def tool_call_status(db: WriteDB, row_id: str) -> str | None:
    """A tool call's current status."""
    status: str | None = db.scalar("SELECT status FROM tool_calls WHERE id = ?", (row_id,))
    return status
