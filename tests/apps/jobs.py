"""An app with scheduled jobs, for tests/test_scheduler*.py.

Every job run writes a `runs` row (its tag and attempt), so a test sees what ran, how often and
which attempt it was.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field

from voicestack import ActionCtx, FunctionError, MutationCtx, QueryCtx, action, mutation, query

MIGRATIONS = [
    "CREATE TABLE runs (id INTEGER PRIMARY KEY, tag TEXT NOT NULL, job TEXT,"
    " attempt INTEGER, user_id TEXT, at REAL NOT NULL DEFAULT (unixepoch('subsec')))",
]


class TagArgs(BaseModel):
    """What a run records."""

    tag: str = Field(min_length=1, max_length=100)


class ScheduleArgs(BaseModel):
    """Schedule `name` with `args` in `seconds`."""

    name: str
    args: Any = None
    seconds: float = 0.0
    at: float | None = None
    max_attempts: int = 3
    fail_after: bool = False


class SlowArgs(BaseModel):
    """Record a start, sleep `seconds` on the first attempt only, record the end."""

    tag: str
    seconds: float


class JobIdArgs(BaseModel):
    """One job."""

    job_id: str


def record(ctx: MutationCtx, tag: str) -> None:
    """Write the `runs` row of one run."""
    job = ctx.job
    ctx.db.execute(
        "INSERT INTO runs(tag, job, attempt, user_id) VALUES (?, ?, ?, ?)",
        (
            tag,
            job.id if job else None,
            job.attempt if job else None,
            ctx.user.id if ctx.user else None,
        ),
    )


@mutation("jobs.record")
def record_run(ctx: MutationCtx, args: TagArgs) -> None:
    """Record one run."""
    record(ctx, args.tag)


@mutation("jobs.fail")
def fail_run(ctx: MutationCtx, args: TagArgs) -> None:
    """Always fail (after a write that the failure rolls back)."""
    record(ctx, args.tag)
    raise FunctionError(
        "job_broke", f"{args.tag} failed on attempt {ctx.job.attempt if ctx.job else 0}."
    )


@mutation("jobs.schedule")
def schedule(ctx: MutationCtx, args: ScheduleArgs) -> dict[str, str]:
    """Schedule a job in this mutation; with `fail_after` the mutation then fails."""
    if args.at is not None:
        job_id = ctx.scheduler.run_at(args.at, args.name, args.args, max_attempts=args.max_attempts)
    else:
        job_id = ctx.scheduler.run_after(
            args.seconds, args.name, args.args, max_attempts=args.max_attempts
        )
    if args.fail_after:
        raise FunctionError("changed_my_mind", "The mutation failed after scheduling.")
    return {"jobId": job_id}


@mutation("jobs.cancel")
def cancel(ctx: MutationCtx, args: JobIdArgs) -> bool:
    """Cancel a pending job."""
    return ctx.scheduler.cancel(args.job_id)


@action("jobs.schedule_from_action")
async def schedule_from_action(ctx: ActionCtx, args: ScheduleArgs) -> dict[str, str]:
    """Schedule a job from an action (committed at once)."""
    job_id = await ctx.scheduler.run_after(args.seconds, args.name, args.args)
    return {"jobId": job_id}


@action("jobs.slow")
async def slow(ctx: ActionCtx, args: SlowArgs) -> None:
    """Record a start, sleep on the first attempt, record the end."""
    attempt = ctx.job.attempt if ctx.job else 0
    await ctx.run_mutation("jobs.record", {"tag": f"{args.tag} start {attempt}"})
    if attempt == 1:
        await asyncio.sleep(args.seconds)
    await ctx.run_mutation("jobs.record", {"tag": f"{args.tag} end {attempt}"})


@query("jobs.runs")
def runs(ctx: QueryCtx) -> list[dict[str, Any]]:
    """Every run, oldest first."""
    return ctx.db.all("SELECT tag, job, attempt, user_id AS user, at FROM runs ORDER BY id")
