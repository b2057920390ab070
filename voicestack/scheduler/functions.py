"""Built-in read-only functions over the scheduler's jobs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from voicestack.functions.context import QueryCtx
from voicestack.functions.registry import query
from voicestack.scheduler.jobs import list_jobs


class ListJobsArgs(BaseModel):
    """The newest jobs, optionally only of one status or function."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["pending", "running", "done", "failed", "cancelled", "interrupted"] | None = (
        None
    )
    name: str | None = Field(None, max_length=200)
    limit: int = Field(50, ge=1, le=500)


@query("scheduler.jobs")
def jobs(ctx: QueryCtx, args: ListJobsArgs) -> list[dict[str, Any]]:
    """Jobs, newest first: an admin (or a server without users) sees all, a user their own."""
    user_id = None if ctx.user is None or ctx.user.is_admin else ctx.user.id
    return list_jobs(ctx.db, args.status, args.name, user_id, args.limit)


FUNCTIONS = (jobs,)
