"""Built-in server functions for threads, messages and tool calls (DESIGN §4).

Mutations here only change rows and announce them on the thread feed; the reply runner notices a
pending reply (or a cancelled one) from the commit itself, so these functions stay plain
transactions that work the same from HTTP, an action or another process on the same file.
"""

from __future__ import annotations

import json
from typing import Any

from voicestack.agent.agents import (
    AGENT_FUNCTIONS,
    DEFAULT_AGENT,
    check_agent_name,
    find_agent,
)
from voicestack.agent.cost import price_stopped_reply, thread_cost
from voicestack.agent.membership import MEMBERSHIP_FUNCTIONS, add_member, require_thread
from voicestack.agent.memory import MEMORY_FUNCTIONS
from voicestack.agent.records import (
    MESSAGE_COLUMNS,
    emit,
    emit_message,
    message_from_row,
    now,
    streamed_text,
    thread_from_row,
)
from voicestack.agent.reply_jobs import insert_reply_job
from voicestack.agent.reply_state import fail_unfinished_tool_calls
from voicestack.agent.thread_args import (
    CreateThreadArgs,
    InThreadArgs,
    ListMessagesArgs,
    ListThreadsArgs,
    SendArgs,
    ThreadIdArgs,
)
from voicestack.agent.tool_calls import TOOL_CALL_FUNCTIONS, thread_tool_calls
from voicestack.agent.usage import USAGE_FUNCTIONS
from voicestack.functions.context import MutationCtx, QueryCtx
from voicestack.functions.errors import FunctionError
from voicestack.functions.registry import mutation, query
from voicestack.identity import Caller
from voicestack.ids import new_id
from voicestack.store.db import ReadDB, WriteDB


def _next_position(db: WriteDB, thread_id: str) -> int:
    # The thread's row keeps its last position (a trigger on every insert into messages). A
    # thread that does not exist gives 1: the insert then fails on its foreign key.
    position: int = db.scalar(
        "SELECT coalesce((SELECT last_position FROM threads WHERE id = ?), 0) + 1", (thread_id,)
    )
    return position


def insert_message(
    db: WriteDB,
    thread_id: str,
    role: str,
    status: str,
    *,
    text: str = "",
    author: str | None = None,
    author_name: str | None = None,
    reply_to: str | None = None,
    audio_file_id: str | None = None,
    audio_in_seconds: float = 0.0,
    speak: bool = False,
    agent: str | None = None,
    model: str | None = None,
    touch_thread: bool = True,
    position: int | None = None,
) -> str:
    """Append a message to a thread, announce it on the feed, and return its id.

    A message transcribed from audio links to it (`audio_file_id`, with the seconds heard); a
    reply with `speak` is spoken sentence by sentence as it streams. A reply records the
    `agent` that writes it and its `model`. `author_name`: the author's name, when the caller
    knows it (else it is read). `touch_thread=False` leaves the thread's
    `updated_at` to a later message of the same mutation. `position`: the message's place,
    when the caller knows it is next (None: the place after the thread's last message).
    """
    message_id = new_id("msg")
    stamp = now()
    # The row the feed announces comes back from the insert itself. (The position is read
    # apart: an INSERT that reads its own table goes through a temporary table, 3-10x slower.)
    row = db.one(
        "INSERT INTO messages(id, thread_id, position, role, text, status, author, reply_to,"
        " audio_file_id, audio_in_seconds, speak, agent, model, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        f" RETURNING {MESSAGE_COLUMNS}",
        (
            message_id,
            thread_id,
            _next_position(db, thread_id) if position is None else position,
            role,
            text,
            status,
            author,
            reply_to,
            audio_file_id,
            audio_in_seconds,
            int(speak),
            agent,
            model,
            stamp,
            stamp,
        ),
    )
    assert row is not None
    if touch_thread:
        db.execute("UPDATE threads SET updated_at = ? WHERE id = ?", (stamp, thread_id))
    emit(db, thread_id, "message", message_id, message_from_row(db, row, author_name))
    return message_id


def finish_message(
    db: WriteDB, message_id: str, status: str, *, error: tuple[str, str] | None = None
) -> None:
    """Close an unfinished reply with `status`, keeping the text it streamed, and fix its cost;
    announce it."""
    text = streamed_text(db, message_id)
    fail_unfinished_tool_calls(db, message_id, f"Not finished: the reply was {status}.")
    code, message = error if error else (None, None)
    db.execute(
        "UPDATE messages SET status = ?, text = CASE WHEN text = '' THEN ? ELSE text END,"
        " error_code = ?, error_message = ?, updated_at = ? WHERE id = ?",
        (status, text, code, message, now(), message_id),
    )
    price_stopped_reply(db, message_id)
    emit_message(db, message_id)


def insert_thread(
    db: WriteDB,
    user: Caller | None,
    *,
    title: str | None = None,
    agent: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Create a thread owned by `user`, answered by `agent` (default `assistant`), with the
    channel's `metadata` (a JSON object; None for the API's threads); returns its id. Raises
    UnknownAgent (422 `unknown_agent`) for a name no agent of the server has."""
    agent_name = check_agent_name(agent if agent is not None else DEFAULT_AGENT)
    thread_id = new_id("thr")
    stamp = now()
    owner = user.id if user else None
    stored = json.dumps(metadata) if metadata is not None else None
    db.execute(
        "INSERT INTO threads(id, title, owner, agent, metadata, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (thread_id, title, owner, agent_name, stored, stamp, stamp),
    )
    if user is not None:
        add_member(db, thread_id, user.id, "owner")
    return thread_id


@mutation("threads.create")
def create_thread(ctx: MutationCtx, args: CreateThreadArgs) -> dict[str, str]:
    """Create a thread owned by the caller, answered by `agent`; returns its id."""
    return {"id": insert_thread(ctx.db, ctx.user, title=args.title, agent=args.agent)}


@query("threads.list")
def list_threads(ctx: QueryCtx, args: ListThreadsArgs) -> list[dict[str, Any]]:
    """The caller's threads, most recently active first."""
    params: list[Any] = []
    conditions = []
    if ctx.user is not None and not ctx.user.is_admin:
        conditions.append("id IN (SELECT thread_id FROM thread_members WHERE user_id = ?)")
        params.append(ctx.user.id)
    if args.before:
        cursor = require_thread(ctx.db, args.before, ctx.user)
        conditions.append("(updated_at, id) < (?, ?)")
        params += [cursor["updated_at"], cursor["id"]]
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = ctx.db.all(
        f"SELECT id, title, owner, agent, metadata, created_at, updated_at FROM threads {where}"
        " ORDER BY updated_at DESC, id DESC LIMIT ?",
        [*params, args.limit],
    )
    return [thread_from_row(row) for row in rows]


def thread_usage(db: ReadDB, thread_id: str) -> dict[str, int | float | None]:
    """Usage summed over a thread's messages; `audioOutSeconds` is the reply audio sent in live
    conversations, `unreportedSteps` the model calls whose token counts never came, and `costUsd`
    the sum of its replies' costs (None when a part of one has no price)."""
    row = db.one(
        "SELECT coalesce(sum(prompt_tokens), 0) AS p, coalesce(sum(completion_tokens), 0) AS c,"
        " coalesce(sum(tool_call_count), 0) AS t, coalesce(sum(wall_ms), 0) AS w,"
        " coalesce(sum(audio_in_seconds), 0) AS ai, coalesce(sum(speech_chars), 0) AS sc,"
        " coalesce(sum(speech_seconds), 0) AS ss,"
        " coalesce(sum(json_extract(voice, '$.audioOutSeconds')), 0) AS ao,"
        " coalesce(sum(unreported_steps) FILTER (WHERE status IN ('complete', 'failed',"
        " 'interrupted')), 0) AS us"
        " FROM messages WHERE thread_id = ?",
        (thread_id,),
    )
    assert row is not None
    return {
        "promptTokens": row["p"],
        "completionTokens": row["c"],
        "toolCalls": row["t"],
        "wallMs": row["w"],
        "audioInSeconds": round(float(row["ai"]), 3),
        "speechChars": row["sc"],
        "speechSeconds": round(float(row["ss"]), 3),
        "audioOutSeconds": round(float(row["ao"]), 3),
        "unreportedSteps": row["us"],
        "costUsd": thread_cost(db, thread_id),
    }


@query("threads.get")
def get_thread(ctx: QueryCtx, args: ThreadIdArgs) -> dict[str, Any]:
    """The thread with its usage, all its messages in order, and its tool calls."""
    thread = thread_from_row(require_thread(ctx.db, args.id, ctx.user))
    rows = ctx.db.all(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? ORDER BY position", (args.id,)
    )
    thread["usage"] = thread_usage(ctx.db, args.id)
    thread["messages"] = [message_from_row(ctx.db, row) for row in rows]
    thread["toolCalls"] = thread_tool_calls(ctx.db, args.id)
    return thread


@query("messages.list")
def list_messages(ctx: QueryCtx, args: ListMessagesArgs) -> list[dict[str, Any]]:
    """The newest `limit` messages before `before` (all when absent), in order."""
    require_thread(ctx.db, args.thread_id, ctx.user)
    return thread_messages(ctx.db, args.thread_id, args.limit, args.before)


def thread_messages(
    db: ReadDB | WriteDB, thread_id: str, limit: int | None = None, before: int | None = None
) -> list[dict[str, Any]]:
    """The thread's newest `limit` messages (all when None) before the `order` `before`, in
    order; the caller has checked that its user may see the thread."""
    rows = db.all(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? AND position < ?"
        " ORDER BY position DESC LIMIT ?",
        (thread_id, before if before is not None else 2**62, -1 if limit is None else limit),
    )
    return [message_from_row(db, row) for row in reversed(rows)]


def start_turn(
    db: WriteDB,
    thread_id: str,
    text: str,
    author: str | None,
    *,
    audio_file_id: str | None = None,
    audio_in_seconds: float = 0.0,
    speak: bool = False,
    agent: str | None = None,
    last_position: int | None = None,
    author_name: str | None = None,
) -> dict[str, str]:
    """Save a user message and queue the assistant's reply to it; the reply runner starts it.
    `agent` and `last_position` are the thread's, when the caller has already read its row in
    this transaction (require_thread); `author_name` is the author's, when the caller knows it.
    """
    # The reply, inserted next in this mutation, sets the thread's updated_at.
    position = _next_position(db, thread_id) if last_position is None else last_position + 1
    message_id = insert_message(
        db,
        thread_id,
        "user",
        "complete",
        text=text,
        author=author,
        author_name=author_name,
        audio_file_id=audio_file_id,
        audio_in_seconds=audio_in_seconds,
        touch_thread=False,
        position=position,
    )
    if agent is None:
        agent = db.scalar("SELECT agent FROM threads WHERE id = ?", (thread_id,))
    profile = find_agent(agent)
    reply_id = insert_message(
        db,
        thread_id,
        "assistant",
        "pending",
        reply_to=message_id,
        speak=speak,
        agent=agent,
        model=profile.model if profile else None,
        position=position + 1,
    )
    insert_reply_job(db, reply_id, thread_id, author)  # the reply's durable record, same commit
    return {"messageId": message_id, "replyId": reply_id}


def start_user_turn(
    db: WriteDB,
    thread: dict[str, Any],
    text: str,
    user: Caller | None,
    *,
    audio_file_id: str | None = None,
    audio_in_seconds: float = 0.0,
    speak: bool = False,
) -> dict[str, str]:
    """start_turn for `user`'s message in `thread`, its row as require_thread read it in this
    transaction: the thread's agent and last place, and the author's name, are not read again."""
    return start_turn(
        db,
        thread["id"],
        text,
        user.id if user else None,
        audio_file_id=audio_file_id,
        audio_in_seconds=audio_in_seconds,
        speak=speak,
        agent=thread["agent"],
        last_position=thread["last_position"],
        author_name=user.name if user else None,
    )


@mutation("messages.send")
def send_message(ctx: MutationCtx, args: SendArgs) -> dict[str, str]:
    """Save the caller's message and queue the assistant's reply to it."""
    thread = require_thread(ctx.db, args.thread_id, ctx.user)
    return start_user_turn(ctx.db, thread, args.text, ctx.user)


def _unfinished_replies(db: WriteDB, thread_id: str) -> list[dict[str, Any]]:
    return db.all(
        "SELECT id, status FROM messages WHERE thread_id = ? AND role = 'assistant'"
        " AND status IN ('pending', 'streaming') ORDER BY position",
        (thread_id,),
    )


@mutation("messages.cancel")
def cancel_reply(ctx: MutationCtx, args: InThreadArgs) -> dict[str, str | None]:
    """Stop the thread's current reply at once, keeping its text; status `interrupted`."""
    require_thread(ctx.db, args.thread_id, ctx.user)
    replies = _unfinished_replies(ctx.db, args.thread_id)
    streaming = [r for r in replies if r["status"] == "streaming"]
    target = next(iter(streaming or replies), None)
    if target is None:
        return {"messageId": None}
    finish_message(
        ctx.db, target["id"], "interrupted", error=("cancelled", "The reply was stopped.")
    )
    return {"messageId": target["id"]}


@mutation("messages.post")
def post_as_assistant(ctx: MutationCtx, args: SendArgs) -> dict[str, str]:
    """Hand-off: a person answers as the assistant; the model's unfinished replies are stopped."""
    require_thread(ctx.db, args.thread_id, ctx.user)
    if ctx.user is not None and not ctx.user.is_admin:
        raise FunctionError("forbidden", "Only an admin can answer as the assistant.", 403)
    author = ctx.user.id if ctx.user else None
    return {"messageId": post_message(ctx.db, args.thread_id, args.text, author)}


def post_message(
    db: WriteDB, thread_id: str, text: str, author: str | None, role: str = "assistant"
) -> str:
    """Save a finished message that starts no reply; returns its id. An assistant message is a
    hand-off: the model's unfinished replies in the thread are stopped."""
    if role == "assistant":
        for reply in _unfinished_replies(db, thread_id):
            finish_message(
                db, reply["id"], "interrupted", error=("handed_off", "A person answered instead.")
            )
    return insert_message(db, thread_id, role, "complete", text=text, author=author)


FUNCTIONS = (
    create_thread,
    list_threads,
    get_thread,
    list_messages,
    send_message,
    cancel_reply,
    post_as_assistant,
    *TOOL_CALL_FUNCTIONS,
    *MEMBERSHIP_FUNCTIONS,
    *MEMORY_FUNCTIONS,
    *AGENT_FUNCTIONS,
    *USAGE_FUNCTIONS,
)
