"""Recall: a reply's context gets the best matches from its user's other threads.

With `--recall N` (or an agent's `recall=N`), before its first model call a reply searches its
user's private threads (no other member, no phone calls) and notes, other than this thread, for
the message it answers; a reply in a shared thread or a phone call recalls nothing, since what
it recalls would reach the other people there (every call shares the telephony user). It uses
hybrid search with embeddings, full-text without. The top N go to the model as one system
message after the instructions, each marked with its thread and message (or note) id, and the
reply's `usage` gets `recalled`, the list of what was recalled and its score. A search that
fails (the embedding provider is down) leaves the reply without recall and says so in the log;
it never fails the reply.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from voicestack.agent.memory import SearchMode, ranked
from voicestack.agent.memory_retrieval import Scope, hydrate, is_private_thread
from voicestack.agent.memory_service import installed_memory
from voicestack.agent.records import now
from voicestack.agent.search_index import index_waiting
from voicestack.functions.errors import FunctionError
from voicestack.store.db import ReadDB, WriteDB
from voicestack.store.store import Store

log = logging.getLogger(__name__)

RECALL_HEADER = (
    "Recalled from this user's other conversations, best match first; each is marked with"
    " where it was said. Use them only if they help with the reply."
)
# A recalled text longer than this is cut: recall informs the reply, it does not replace it.
MAX_RECALLED_CHARS = 1000


def find_recalled(
    db: ReadDB, user_id: str, thread_id: str, text: str, limit: int
) -> list[dict[str, Any]]:
    """The best `limit` messages and notes from `user_id`'s private threads (theirs alone, no
    phone calls) and notes, outside `thread_id`, for `text`; nothing when `thread_id` is not
    private itself, since a shared thread or a phone call would show them to someone else."""
    if not is_private_thread(db, thread_id, user_id):
        return []
    memory = installed_memory()
    mode: SearchMode = "hybrid" if memory.enabled else "text"
    scope = Scope(user_id=user_id, exclude=thread_id, private=True)
    return hydrate(db, ranked(db, text, mode, scope, limit, memory)[:limit])


def _mark(hit: dict[str, Any]) -> str:
    where = f"thread {hit['threadId']}" if hit["threadId"] else "a note of the user's own"
    kind = "message" if hit["source"] == "message" else "note"
    text = hit["text"]
    if len(text) > MAX_RECALLED_CHARS:
        text = text[: MAX_RECALLED_CHARS - 1] + "…"
    return f"[{where}, {kind} {hit['id']}] {text}"


def recall_message(hits: list[dict[str, Any]]) -> dict[str, Any]:
    """The system message that shows the model what was recalled."""
    return {"role": "system", "content": "\n".join([RECALL_HEADER, *map(_mark, hits)])}


def usage_entries(hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a reply's `usage.recalled` lists: where each match is and its score."""
    entries = []
    for hit in hits:
        key = "messageId" if hit["source"] == "message" else "noteId"
        entries.append({"threadId": hit["threadId"], key: hit["id"], "score": hit["score"]})
    return entries


def record_recalled(db: WriteDB, message_id: str, hits: list[dict[str, Any]]) -> None:
    """Note on the reply's row what it recalled."""
    db.execute(
        "UPDATE messages SET recalled = ?, updated_at = ? WHERE id = ?",
        (json.dumps(usage_entries(hits)), now(), message_id),
    )


def _last_user_text(messages: list[dict[str, Any]]) -> str | None:
    for message in reversed(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            text: str = message["content"]
            return text
    return None


async def with_recall(
    store: Store,
    messages: list[dict[str, Any]],
    *,
    message_id: str,
    thread_id: str,
    user_id: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """`messages` with the recall message after the instructions (unchanged when there is no
    user, no text to search for, or nothing to recall)."""
    text = _last_user_text(messages)
    if limit <= 0 or user_id is None or not text:
        return messages
    try:
        await index_waiting(store)
        hits = await store.read(
            lambda snap: find_recalled(snap.db(), user_id, thread_id, text, limit)
        )
        await store.write(lambda db: record_recalled(db, message_id, hits))
    except FunctionError as exc:
        log.warning("reply %s recalls nothing: %s", message_id, exc.message)
        return messages
    except Exception:  # recall only informs a reply: whatever fails, the reply goes on
        log.exception("reply %s recalls nothing: the search failed", message_id)
        return messages
    if not hits:
        return messages
    at = 1 if messages and messages[0].get("role") == "system" else 0
    return [*messages[:at], recall_message(hits), *messages[at:]]
