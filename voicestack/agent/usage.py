"""The query `usage.summary` (DESIGN §8): what conversations used and cost, grouped by agent,
model, day or user.

It counts turns: a model's reply with the message it answers (whose audio was transcribed for
it). An admin sees every thread's; anyone else the threads they own. A group's `costUsd` is the
sum of its turns' costs, or null when any ended turn in it has none (a model without a price):
a partial sum would read as the total. `unpricedReplies` says how many such turns there are.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from voicestack.agent.cost import TURN_FILTER, TURNS, UNPRICED, total_cost
from voicestack.functions.context import QueryCtx
from voicestack.functions.registry import query

By = Literal["agent", "model", "day", "user"]
# What `since` and `until` accept, as their JSON schema says (they are unix seconds once read).
_MOMENT_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}]
}

# The group of a turn: the agent and model that wrote the reply, its UTC day, its thread's owner.
GROUP_KEYS: dict[str, str] = {
    "agent": "m.agent",
    "model": "m.model",
    "day": "date(m.created_at, 'unixepoch')",
    "user": "(SELECT name FROM auth_users WHERE id = t.owner)",
}

_SUMS = (
    "count(*) AS replies, coalesce(sum(m.prompt_tokens), 0) AS prompt_tokens,"
    " coalesce(sum(m.completion_tokens), 0) AS completion_tokens,"
    " coalesce(sum(m.tool_call_count), 0) AS tool_calls,"
    " coalesce(sum(u.audio_in_seconds), 0) AS audio_in_seconds,"
    " coalesce(sum(m.speech_chars), 0) AS speech_chars,"
    " coalesce(sum(m.speech_seconds), 0) AS speech_seconds,"
    f" sum(m.cost_usd) AS known_cost, count(*) FILTER (WHERE {UNPRICED}) AS unpriced"
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
        "costUsd": total_cost(row["known_cost"], row["unpriced"]),
        "unpricedReplies": row["unpriced"],
    }


@query("usage.summary")
def usage_summary(ctx: QueryCtx, args: SummaryArgs) -> dict[str, Any]:
    """Tokens, audio, speech and cost of the caller's threads (an admin's: all), per group."""
    conditions = [TURN_FILTER]
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
        f"SELECT {key} AS key, {_SUMS} FROM {TURNS} WHERE {where} GROUP BY 1 ORDER BY 1", params
    )
    total = ctx.db.one(f"SELECT {_SUMS} FROM {TURNS} WHERE {where}", params)
    assert total is not None
    return {
        "by": args.by,
        "since": args.since,
        "until": args.until,
        "rows": [{"key": row["key"], **_usage(row)} for row in rows],
        "total": _usage(total),
    }


USAGE_FUNCTIONS = (usage_summary,)
