"""`ctx.scheduler`: how a mutation or an action schedules a function to run later.

A mutation's jobs are rows of its own transaction: if the mutation rolls back, its jobs never
existed. An action has no transaction, so each call commits its job at once. Both check, when
scheduling, that the function exists as a mutation or action and that the arguments fit it.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from voicestack.functions.cron import DEFAULT_MAX_ATTEMPTS
from voicestack.identity import Caller
from voicestack.scheduler.jobs import cancel_job, insert_job
from voicestack.store.db import WriteDB

T = TypeVar("T")

# Raises FunctionError when `name` cannot be scheduled with `args`; returns the args to store.
JobCheck = Callable[[str, Any], Any]


class Write(Protocol):
    """Runs `fn(db)` as a write of its own; resolves to what `fn` returned, after COMMIT."""

    def __call__(self, fn: Callable[[WriteDB], T], /) -> Awaitable[T]: ...


def when_to_seconds(when: datetime.datetime | float) -> float:
    """`when` as unix seconds; a datetime without a timezone is taken as UTC."""
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        return when.timestamp()
    seconds = float(when)
    if not math.isfinite(seconds):
        raise ValueError(f"A job's time must be finite, not {when!r}.")
    return seconds


class JobPlanner:
    """Checks and inserts jobs for one caller."""

    def __init__(self, check: JobCheck, user: Caller | None) -> None:
        self._check = check
        self._user = user

    def plan(self, db: WriteDB, run_at: float, name: str, args: Any, max_attempts: int) -> str:
        """Insert the job in `db`'s transaction after checking it; returns its id."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1.")
        stored = self._check(name, args)
        return insert_job(db, name, stored, run_at, self._user, max_attempts=max_attempts)


class MutationScheduler:
    """Schedules jobs inside the running mutation's transaction."""

    def __init__(self, db: WriteDB, planner: JobPlanner) -> None:
        self._db = db
        self._planner = planner

    def run_after(
        self,
        seconds: float,
        name: str,
        args: Any = None,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> str:
        """Run function `name` with `args` `seconds` from now (once this mutation commits);
        returns the job id."""
        return self.run_at(
            time.time() + max(0.0, float(seconds)), name, args, max_attempts=max_attempts
        )

    def run_at(
        self,
        when: datetime.datetime | float,
        name: str,
        args: Any = None,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> str:
        """Run function `name` with `args` at `when` (a datetime, or unix seconds); returns the
        job id."""
        return self._planner.plan(self._db, when_to_seconds(when), name, args, max_attempts)

    def cancel(self, job_id: str) -> bool:
        """Cancel a pending job; False when it is running, ended or unknown."""
        return cancel_job(self._db, job_id)


class ActionScheduler:
    """Schedules jobs from an action: each call is a write of its own."""

    def __init__(self, write: Write, planner: JobPlanner) -> None:
        self._write = write
        self._planner = planner

    async def run_after(
        self,
        seconds: float,
        name: str,
        args: Any = None,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> str:
        """Run function `name` with `args` `seconds` from now; returns the committed job's id."""
        when = time.time() + max(0.0, float(seconds))
        return await self.run_at(when, name, args, max_attempts=max_attempts)

    async def run_at(
        self,
        when: datetime.datetime | float,
        name: str,
        args: Any = None,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> str:
        """Run function `name` with `args` at `when`; returns the committed job's id."""
        run_at = when_to_seconds(when)
        return await self._write(
            lambda db: self._planner.plan(db, run_at, name, args, max_attempts)
        )

    async def cancel(self, job_id: str) -> bool:
        """Cancel a pending job; False when it is running, ended or unknown."""
        return await self._write(lambda db: cancel_job(db, job_id))
