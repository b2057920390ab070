"""How a live conversation ends a reply: cut to what was heard (barge-in, server shutdown), or
stopped (hang-up)."""

from __future__ import annotations

import logging

from voicestack.agent.cost import price_stopped_reply
from voicestack.agent.records import emit_message, now, streamed_text
from voicestack.agent.reply_state import HEARD_CUT, SHUTDOWN_CUT, fail_unfinished_tool_calls
from voicestack.agent.threads import finish_message
from voicestack.store.db import WriteDB
from voicestack.voice.realtime.heard import heard_prefix

_OPEN = ("pending", "streaming")
log = logging.getLogger(__name__)
_WHY = {
    HEARD_CUT: ("the user", "The user spoke over the reply; its text is what they heard."),
    SHUTDOWN_CUT: (
        "a server shutdown",
        "The server stopped during the reply; its text is what the listener heard.",
    ),
}


def cut_to_heard(db: WriteDB, message_id: str, heard: str, why: str = HEARD_CUT) -> str | None:
    """Save the reply `interrupted` (error code `why`: HEARD_CUT or SHUTDOWN_CUT), its text cut
    to the words `heard`; None (nothing changed) when it had already failed or been stopped by
    someone else.

    A reply still streaming is stopped by this commit (the runner cancels it and keeps this
    text); one whose text was complete but whose audio was still playing is cut all the same.
    """
    row = db.one("SELECT status, text FROM messages WHERE id = ?", (message_id,))
    if row is None or row["status"] not in (*_OPEN, "complete"):
        return None
    full = row["text"] if row["status"] == "complete" else streamed_text(db, message_id)
    who, reason = _WHY[why]
    log.info("reply %s interrupted by %s while %s", message_id, who, row["status"])
    text = heard_prefix(full, heard)
    fail_unfinished_tool_calls(db, message_id, f"Not finished: interrupted by {who}.")
    db.execute(
        "UPDATE messages SET status = 'interrupted', text = ?, error_code = ?,"
        " error_message = ?, updated_at = ? WHERE id = ?",
        (text, why, reason, now(), message_id),
    )
    price_stopped_reply(db, message_id)
    emit_message(db, message_id)
    return text


def stop_unfinished(db: WriteDB, message_id: str) -> bool:
    """Stop the reply, keeping the text it streamed, if it is still pending or streaming."""
    status = db.scalar("SELECT status FROM messages WHERE id = ?", (message_id,))
    if status not in _OPEN:
        return False
    finish_message(
        db,
        message_id,
        "interrupted",
        error=("conversation_ended", "The live conversation ended during this reply."),
    )
    return True
