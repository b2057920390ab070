"""The query `usage.summary` (DESIGN §8): what conversations used and cost, grouped by agent,
model, day or user.

It counts the parts of model replies (voicestack/agent/reply_parts.py): one per agent that
answered in a reply, on its own model, so a reply that handed off counts in the group of each
agent and model that wrote part of it (`replies` counts a reply once per group, and once in the
total). An admin sees every thread's; anyone else the threads they own. A group's `costUsd` is
the sum of its parts' costs, or null when any part of an ended reply in it has none (a model
without a price): a partial sum would read as the total. `unpricedReplies` counts the replies
with such a part; `unreportedSteps` the model calls whose token counts never came (a reply
stopped mid-step): their tokens are not in the sums, and the cost is a lower bound.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from voicestack.agent.cost import PART_FILTER, PARTS, UNPRICED, total_cost
from voicestack.functions.context import QueryCtx
from voicestack.functions.registry import query

By = Literal["agent", "model", "day", "user"]
# What `since` and `until` accept, as their JSON schema says (they are unix seconds once read).
_MOMENT_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}]
}

# The group of a part: the agent and model that wrote it, its reply's UTC day, its thread's owner.
GROUP_KEYS: dict[str, str] = {
    "agent": "p.agent",
    "model": "p.model",
    "day": "date(m.created_at, 'unixepoch')",
    "user": "(SELECT name FROM auth_users WHERE id = t.owner)",
}

_SUMS = (
    "count(DISTINCT p.message_id) AS replies, coalesce(sum(p.prompt_tokens), 0) AS prompt_tokens,"
    " coalesce(sum(p.completion_tokens), 0) AS completion_tokens,"
    " coalesce(sum(p.tool_calls), 0) AS tool_calls,"
    " coalesce(sum(p.audio_in_seconds), 0) AS audio_in_seconds,"
    " coalesce(sum(p.speech_chars), 0) AS speech_chars,"
    " coalesce(sum(p.speech_seconds), 0) AS speech_seconds,"
    " coalesce(sum(p.unreported_steps) FILTER (WHERE m.status IN ('complete', 'failed',"
    " 'interrupted')), 0) AS unreported_steps,"
    " sum(p.cost_usd) AS known_cost,"
    f" count(*) FILTER (WHERE {UNPRICED}) AS unpriced_parts,"
    f" count(DISTINCT p.message_id) FILTER (WHERE {UNPRICED}) AS unpriced"
)


def _seconds(value: Any) -> Any:
    """Unix seconds from a number or an ISO 8601 date or time (UTC when it names no zone)."""
    if not isinstance(value, str):
        return value
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            "give unix seconds or an ISO 8601 date or time, such as 2026-12-01"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


class SummaryArgs(BaseModel):
    """Usage and cost per group of turns, from `since` (included) to `until` (excluded)."""

    model_config = ConfigDict(extra="forbid")

    by: By = Field(description="Group by agent, model, day (UTC) or user (the thread's owner).")
    since: float | None = Field(
        None,
        description="Unix seconds or an ISO 8601 date or time: turns from then on.",
        json_schema_extra=_MOMENT_SCHEMA,
    )
    until: float | None = Field(
        None,
        description="Unix seconds or an ISO 8601 date or time: turns before then.",
        json_schema_extra=_MOMENT_SCHEMA,
    )

    _times = field_validator("since", "until", mode="before")(_seconds)


def _usage(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "replies": row["replies"],
        "promptTokens": row["prompt_tokens"],
        "completionTokens": row["completion_tokens"],
        "toolCalls": row["tool_calls"],
        "audioInSeconds": round(float(row["audio_in_seconds"]), 3),
        "speechChars": row["speech_chars"],
        "speechSeconds": round(float(row["speech_seconds"]), 3),
        "costUsd": total_cost(row["known_cost"], row["unpriced_parts"]),
        "unpricedReplies": row["unpriced"],
        "unreportedSteps": row["unreported_steps"],
    }


@query("usage.summary")
def usage_summary(ctx: QueryCtx, args: SummaryArgs) -> dict[str, Any]:
    """Tokens, tool calls, audio, speech and cost of the caller's threads (an admin's: all), per
    group of reply parts."""
    conditions = [PART_FILTER]
    params: list[Any] = []
    if ctx.user is not None and not ctx.user.is_admin:
        conditions.append("t.owner = ?")
        params.append(ctx.user.id)
    if args.since is not None:
        conditions.append("m.created_at >= ?")
        params.append(args.since)
    if args.until is not None:
        conditions.append("m.created_at < ?")
        params.append(args.until)
    where = " AND ".join(conditions)
    key = GROUP_KEYS[args.by]
    rows = ctx.db.all(
        f"SELECT {key} AS key, {_SUMS} FROM {PARTS} WHERE {where} GROUP BY 1 ORDER BY 1", params
    )
    total = ctx.db.one(f"SELECT {_SUMS} FROM {PARTS} WHERE {where}", params)
    assert total is not None
    return {
        "by": args.by,
        "since": args.since,
        "until": args.until,
        "rows": [{"key": row["key"], **_usage(row)} for row in rows],
        "total": _usage(total),
    }


USAGE_FUNCTIONS = (usage_summary,)
