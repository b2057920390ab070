"""`memory.search`: full-text search over the messages of every thread the caller may see.

The index is an FTS5 table over `messages.text` with external content (the text is stored once,
in `messages`); triggers keep it in step. A streaming reply's text is written to `messages` once,
when it ends, so the index is not rewritten for every streamed word.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from voicestack.agent.membership import require_thread
from voicestack.agent.records import MESSAGE_COLUMNS, message_from_row
from voicestack.functions.context import QueryCtx
from voicestack.functions.registry import query
from voicestack.store.search import match_expression


class SearchArgs(BaseModel):
    """Words to look for, in one thread or in all the caller's threads."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    query: str = Field(min_length=1, max_length=1000, description="Words to look for.")
    thread_id: str | None = Field(
        None, alias="threadId", min_length=1, max_length=100, description="Only this thread."
    )
    limit: int = Field(20, ge=1, le=100)


_PREFIXED_COLUMNS = ", ".join(f"m.{name.strip()}" for name in MESSAGE_COLUMNS.split(","))


@query("memory.search")
def search(ctx: QueryCtx, args: SearchArgs) -> list[dict[str, Any]]:
    """Messages matching any word of `query`, best first (BM25), each a message row with a
    `snippet` marking the matched words with [ and ]; only threads the caller may see."""
    match = match_expression(args.query)
    if match is None:
        return []
    conditions = ["message_search MATCH ?"]
    params: list[Any] = [match]
    if args.thread_id is not None:
        require_thread(ctx.db, args.thread_id, ctx.user)
        conditions.append("m.thread_id = ?")
        params.append(args.thread_id)
    elif ctx.user is not None and not ctx.user.is_admin:
        conditions.append("m.thread_id IN (SELECT thread_id FROM thread_members WHERE user_id = ?)")
        params.append(ctx.user.id)
    rows = ctx.db.all(
        f"SELECT {_PREFIXED_COLUMNS},"
        " snippet(message_search, 0, '[', ']', '…', 16) AS snippet"
        " FROM message_search JOIN messages m ON m.rowid = message_search.rowid"
        f" WHERE {' AND '.join(conditions)}"
        " ORDER BY bm25(message_search), m.created_at DESC LIMIT ?",
        [*params, args.limit],
    )
    hits = []
    for row in rows:
        hit = message_from_row(ctx.db, row)
        hit["snippet"] = row["snippet"]
        hits.append(hit)
    return hits


MEMORY_FUNCTIONS = (search,)
