"""The relay's writes: the user's and the assistant's transcripts as thread messages and feed
deltas, the assistant message's usage, and its end.

A user turn becomes a `streaming` user message as soon as the provider commits its audio, so it
sits before the assistant's answer even when its transcript arrives later; the transcript's
deltas stream into it and its completion makes it `complete`. The assistant's message is a
reply like any other (agent, model, usage parts, deltas, final status, cost), but it is written
by the relay instead of the reply runner, which never claims it: it is born `streaming`, with
no reply job.
"""

from __future__ import annotations

from typing import Any

from voicestack.agent.cost import Pricing
from voicestack.agent.records import emit_delta, emit_message, now, streamed_text
from voicestack.agent.reply_parts import add_step_usage, begin_step, open_part
from voicestack.agent.reply_state import Claim, finish_reply, still_streaming
from voicestack.agent.threads import insert_message, thread_messages
from voicestack.store.db import ReadDB, WriteDB


def open_user_turn(db: WriteDB, thread_id: str, author: str | None, audio_s: float) -> str:
    """A user message for speech the provider committed, its transcript still to come."""
    return insert_message(
        db, thread_id, "user", "streaming", author=author, audio_in_seconds=audio_s
    )


def add_user_delta(db: WriteDB, thread_id: str, message_id: str, text: str, seq: int) -> bool:
    """A piece of the user's transcript, on the feed; False once the message has ended."""
    if not still_streaming(db, message_id):
        return False
    emit_delta(db, thread_id, message_id, text, seq)
    return True


def end_user_turn(
    db: WriteDB, message_id: str, text: str | None, error: tuple[str, str] | None = None
) -> None:
    """The user's transcript is known (`text`; None: what streamed): the message is complete,
    or `failed` with `error` (the provider could not transcribe it)."""
    if text is None:
        text = streamed_text(db, message_id)
    status = "failed" if error else "complete"
    code, message = error if error else (None, None)
    db.execute(
        "UPDATE messages SET status = ?, text = ?, error_code = ?, error_message = ?,"
        " updated_at = ? WHERE id = ? AND status = 'streaming'",
        (status, text, code, message, now(), message_id),
    )
    emit_message(db, message_id)


def save_typed_turn(db: WriteDB, thread_id: str, author: str | None, text: str) -> str:
    """A typed user turn, complete at once."""
    return insert_message(db, thread_id, "user", "complete", text=text, author=author)


def open_reply(
    db: WriteDB,
    thread_id: str,
    author: str | None,
    reply_to: str | None,
    agent: str,
    model: str,
    audio_in_seconds: float,
) -> Claim:
    """The assistant message of a relayed turn, `streaming`, with its first usage part."""
    message_id = insert_message(
        db,
        thread_id,
        "assistant",
        "streaming",
        reply_to=reply_to,
        agent=agent,
        model=model,
    )
    open_part(db, message_id, agent, model, audio_in_seconds)
    position: int = db.scalar("SELECT position FROM messages WHERE id = ?", (message_id,))
    return Claim(message_id, thread_id, position, author, False, agent)


def add_reply_delta(db: WriteDB, claim: Claim, text: str, seq: int) -> bool:
    """A piece of the assistant's transcript, on the feed; False once the reply has ended."""
    if not still_streaming(db, claim.message_id):
        return False
    emit_delta(db, claim.thread_id, claim.message_id, text, seq)
    return True


def begin_response(db: WriteDB, message_id: str) -> None:
    """A provider response of the reply begins: a step whose tokens are not reported yet."""
    begin_step(db, message_id)


def add_response_usage(db: WriteDB, message_id: str, usage: tuple[int, int] | None) -> None:
    """A response's token counts (input, output), when its `response.done` reported them."""
    if usage is not None:
        add_step_usage(db, message_id, usage[0], usage[1])


def end_reply(
    db: WriteDB,
    claim: Claim,
    status: str,
    wall_ms: int,
    error: tuple[str, str] | None,
    pricing: Pricing | None,
) -> None:
    """The reply's final status (a reply already cut to what was heard keeps that)."""
    finish_reply(db, claim, status, wall_ms, error, pricing)


def history_items(db: ReadDB, thread_id: str, limit: int) -> list[dict[str, Any]]:
    """The thread's last `limit` finished messages as `conversation.item.create` events, so a
    new provider session (a thread with a past, or after a reconnect) knows the conversation."""
    items = []
    for message in thread_messages(db, thread_id, limit):
        text, role = message["text"], message["role"]
        if not text or role not in ("user", "assistant"):
            continue
        if message["status"] not in ("complete", "interrupted"):
            continue
        kind = "input_text" if role == "user" else "output_text"
        item = {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}
        items.append({"type": "conversation.item.create", "item": item})
    return items
