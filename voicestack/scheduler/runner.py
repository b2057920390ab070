"""The durable scheduler: runs due function jobs from the `jobs` table, at least once each.

Only the leader process runs it (voicestack.store.leader). It sleeps until the next job is due,
and is also a hub CommitObserver over `jobs`, so a commit that adds an earlier job (from this
process or another on the same file) wakes it at once. A job is claimed in a write (status
`running`, one attempt more, this process's token), run through the Runtime as the user who
scheduled it, then marked `done`, or on error given back to `pending` after a doubling backoff
until its `max_attempts`, when it stays `failed` with its error. A mutation job is marked done in
the mutation's own transaction, so it takes effect exactly once; an action job may run again if
the process dies between the action and the mark.

At start every job left `running` belonged to a leader that died (there is one leader at a
time), so it is queued again, or failed when that was its last attempt.

For apps: `ctx.scheduler.run_after(seconds, name, args)`, `run_at(when, name, args)` and
`cancel(job_id)` in a mutation or action (voicestack.scheduler.context); `CRONS = [Cron(...)]` in
the app module (voicestack.scheduler.cron); `ctx.job.attempt` (1 first) in a function run as a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from voicestack.functions.cron import Cron
from voicestack.functions.errors import FunctionError
from voicestack.scheduler.cron import queue_next_run, sync_crons
from voicestack.scheduler.jobs import (
    JobRun,
    claim_due,
    complete_job,
    fail_attempt,
    next_due,
    prune_finished,
    requeue_running,
)
from voicestack.store.changes import ChangeSet
from voicestack.store.db import WriteDB
from voicestack.store.readers import Snapshot
from voicestack.store.store import Store

log = logging.getLogger(__name__)

# Runs `job`; calls the given write function in the transaction that makes the run's effect
# durable (the mutation's own, or a write right after the action returned).
RunJob = Callable[[JobRun, Callable[[WriteDB], None]], Awaitable[None]]

BACKOFF_S = 1.0
MAX_RUNNING = 8
# Wake up at least this often, whatever the next due time says (clock changes, lost wake-ups).
MAX_SLEEP_S = 30.0
# Ended jobs (replies' included) are history: kept a week, then deleted, checked hourly.
KEEP_ENDED_S = 7 * 24 * 3600.0
PRUNE_EVERY_S = 3600.0
# A job that has not returned by then counts as a failed attempt, so a hung call cannot hold a
# running slot (and its job) until the server stops.
JOB_TIMEOUT_S = 600.0


def error_text(exc: BaseException) -> str:
    """How a failed attempt is recorded in `last_error`."""
    if isinstance(exc, FunctionError):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, ValidationError):
        return "invalid_args: " + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'args'}: {e['msg']}" for e in exc.errors()
        )
    return f"{type(exc).__name__}: {exc}"


class Scheduler:
    """Runs due jobs while this process leads; see the module docstring for the rules."""

    tables = frozenset({"jobs"})

    def __init__(
        self,
        store: Store,
        run_job: RunJob,
        crons: list[Cron],
        *,
        backoff_s: float = BACKOFF_S,
        max_running: int = MAX_RUNNING,
        timeout_s: float = JOB_TIMEOUT_S,
    ) -> None:
        self._store = store
        self._timeout_s = timeout_s
        self._run_job = run_job
        self._crons = {cron.key: cron for cron in crons}
        self._backoff_s = backoff_s
        self._max_running = max_running
        self._running = False
        self._loop_task: asyncio.Task[None] | None = None
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._next_wake = 0.0
        self._pruned_at = 0.0

    @property
    def active(self) -> bool:
        """True while this process runs jobs (the hub skips batches for an inactive source)."""
        return self._running

    @property
    def running_jobs(self) -> int:
        """How many jobs run in this process now."""
        return len(self._runs)

    async def start(self) -> None:
        """Queue again the jobs a dead leader left running, sync the cron schedules, and start."""
        ended = (
            await self._store.write(lambda db: self._requeue(db, "the server stopped", None))
        ).value
        if ended:
            log.warning("re-queued or failed %d jobs left running by the last process", ended)
        added = (
            await self._store.write(lambda db: sync_crons(db, list(self._crons.values())))
        ).value
        if added:
            log.info("queued %d cron runs", added)
        self._running = True
        self._loop_task = asyncio.get_running_loop().create_task(
            self._loop(), name="voicestack-scheduler"
        )

    def _requeue(self, db: WriteDB, reason: str, ids: list[str] | None) -> int:
        outcomes = requeue_running(db, reason, ids)
        for key, failed in outcomes:
            if failed:
                self._queue_next(db, key)
        return len(outcomes)

    def _queue_next(self, db: WriteDB, cron_key: str | None) -> None:
        cron = self._crons.get(cron_key or "")
        if cron is not None:
            queue_next_run(db, cron)

    # -- the hub's CommitObserver protocol -----------------------------------------------------

    def collect(self, snapshot: Snapshot, _changes: list[ChangeSet]) -> float | None:
        """When the next job is due, as the batch's commits left it."""
        if not self._running:
            return None
        return next_due(snapshot.db())

    def deliver(self, due: float | None) -> None:
        """Wake the loop when a commit brought a job due before its planned wake-up."""
        if due is not None and due < self._next_wake - 0.001:
            self._wake.set()

    # -- running -------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while self._running:
            self._wake.clear()
            self._next_wake = float("inf")  # any commit with a job wakes us until we know better
            try:
                await self._prune()
                due = await self._store.read(lambda snap: next_due(snap.db()))
                free = self._max_running - len(self._runs)
                if due is not None and due <= time.time() and free > 0:
                    claim = functools.partial(claim_due, limit=free)
                    runs = (await self._store.write(claim)).value
                    for run in runs:
                        self._runs[run.id] = asyncio.get_running_loop().create_task(
                            self._run(run), name=f"voicestack-job-{run.id}"
                        )
                    continue  # look again: more may be due
            except Exception:
                log.exception("the scheduler could not claim jobs; trying again")
                due = time.time() + 1.0
            if len(self._runs) >= self._max_running or due is None:
                sleep = MAX_SLEEP_S  # a run that ends, or a new job, wakes us
            else:
                sleep = min(max(0.0, due - time.time()), MAX_SLEEP_S)
            self._next_wake = time.time() + sleep
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), sleep)

    async def _prune(self) -> None:
        moment = time.time()
        if moment - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = moment
            deleted = (
                await self._store.write(lambda db: prune_finished(db, moment - KEEP_ENDED_S))
            ).value
            if deleted:
                log.info("deleted %d jobs that ended over a week ago", deleted)

    async def _run(self, run: JobRun) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._run_job(run, lambda db: self._succeed(db, run))
        except asyncio.CancelledError:
            raise  # close() gives the job back
        except Exception as exc:
            error = (
                f"job_timeout: no result within {self._timeout_s:g} s"
                if isinstance(exc, TimeoutError)
                else error_text(exc)
            )
            log.warning("job %s (%s) attempt %d failed: %s", run.id, run.name, run.attempt, error)
            try:
                await self._store.write(lambda db: self._fail(db, run, error))
            except Exception:
                log.exception("could not record the failure of job %s", run.id)
        finally:
            self._runs.pop(run.id, None)
            self._wake.set()

    def _succeed(self, db: WriteDB, run: JobRun) -> None:
        if complete_job(db, run.id):
            self._queue_next(db, run.cron_key)

    def _fail(self, db: WriteDB, run: JobRun, error: str) -> None:
        if fail_attempt(db, run, error, self._backoff_s):
            self._queue_next(db, run.cron_key)

    async def drain(self, timeout: float) -> int:
        """Claim no more jobs and wait up to `timeout` seconds for the running ones; returns how
        many still run (`close` gives those back to pending)."""
        self._running = False
        await self._stop_loop()
        runs = list(self._runs.values())
        if runs and timeout > 0:
            await asyncio.wait(runs, timeout=timeout)
        return len(self._runs)

    async def _stop_loop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
            self._loop_task = None

    async def close(self) -> None:
        """Stop the loop and every run; interrupted runs are queued again (or failed when it
        was their last attempt)."""
        self._running = False
        await self._stop_loop()
        runs = dict(self._runs)
        for task in runs.values():
            task.cancel()
        for task in runs.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if runs:
            ids = list(runs)
            await self._store.write(lambda db: self._requeue(db, "the server shut down", ids))
            log.warning("gave %d interrupted jobs back to the queue", len(ids))


__all__ = ["Cron", "RunJob", "Scheduler", "error_text"]
