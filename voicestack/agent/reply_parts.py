"""A reply's usage in parts, written as it happens: one part per agent that answered in it.

A reply's first part opens when it is claimed (with the transcribed audio of the message it
answers), and each handoff opens the next, on the new agent's model. Every model call (a step)
is counted unreported when it starts and made reported when its provider's token counts arrive,
so a reply stopped mid-step, or by a crash, keeps the tokens of its finished steps and says how
many steps it cannot count. Tool calls and speech go to the part answering at the time. Each
write adds to the message's own totals too, which stay its public `usage`.

These run in the caller's transaction; they write whatever the reply's status is, because a
reply someone stopped has still used what its provider reports.
"""

from __future__ import annotations

from voicestack.agent.records import now
from voicestack.store.db import ReadDB, WriteDB

_CURRENT = "(SELECT max(id) FROM reply_parts WHERE message_id = ?)"


def open_part(
    db: WriteDB,
    message_id: str,
    agent: str | None,
    model: str | None,
    audio_in_seconds: float = 0.0,
) -> int:
    """Start the reply's next part, written by `agent` on `model`; returns its id."""
    return db.execute(
        "INSERT INTO reply_parts(message_id, agent, model, audio_in_seconds, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (message_id, agent, model, audio_in_seconds, now()),
    ).last_rowid


def has_parts(db: ReadDB | WriteDB, message_id: str) -> bool:
    """True once the reply has a part."""
    found = db.scalar("SELECT 1 FROM reply_parts WHERE message_id = ? LIMIT 1", (message_id,))
    return found is not None


def _add(
    db: WriteDB, message_id: str, part_sql: str, message_sql: str, values: tuple[object, ...]
) -> None:
    db.execute(f"UPDATE reply_parts SET {part_sql} WHERE id = {_CURRENT}", (*values, message_id))
    db.execute(f"UPDATE messages SET {message_sql} WHERE id = ?", (*values, message_id))


def begin_step(db: WriteDB, message_id: str) -> None:
    """A model call of the reply starts: unreported until its token counts arrive."""
    _add(
        db,
        message_id,
        "unreported_steps = unreported_steps + ?",
        "unreported_steps = unreported_steps + ?",
        (1,),
    )


def add_step_usage(
    db: WriteDB, message_id: str, prompt_tokens: int, completion_tokens: int
) -> None:
    """The token counts of the step that `begin_step` started. A count without prompt tokens
    (every model call has a prompt) is no report: its completion tokens add up, and the step
    stays unreported."""
    reported = 1 if prompt_tokens > 0 else 0
    sql = (
        "prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ?,"
        " unreported_steps = unreported_steps - ?"
    )
    _add(db, message_id, sql, sql, (prompt_tokens, completion_tokens, reported))


def add_tool_calls(db: WriteDB, message_id: str, count: int) -> None:
    """`count` tool calls the model asked for (run or refused)."""
    _add(
        db,
        message_id,
        "tool_calls = tool_calls + ?",
        "tool_call_count = tool_call_count + ?",
        (count,),
    )


def add_speech(db: WriteDB, message_id: str, chars: int, seconds: float) -> None:
    """A sentence of the reply spoken: `chars` characters, `seconds` of audio."""
    sql = "speech_chars = speech_chars + ?, speech_seconds = speech_seconds + ?"
    _add(db, message_id, sql, sql, (chars, seconds))
