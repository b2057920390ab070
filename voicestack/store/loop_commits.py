"""Writes gathered over one turn of an event loop, committed together on the loop's own thread.

A write from a task normally crosses to the writer thread and back: a wake-up of that thread,
GIL hand-offs while apsw releases the GIL around every statement, and a wake-up of the loop to
tell the task. For short mutations that crossing costs more than the mutation. So the writes
the loop's tasks ask for during one turn are gathered, and at the end of that turn committed as
one batch on the loop itself, when nothing else is writing (Writer.commit_on_loop). When
something is (the writer thread's own batch, another process, a writer outside voicestack), the
batch goes to the writer thread as if it had been queued there. So does a batch that is too
long: over MAX_LOOP_BATCH writes, or slower mutations (those not quick, each under a
millisecond) adding up to more than SLOW_BUDGET_S.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from voicestack.store.db import WriteDB
from voicestack.store.write_jobs import WriteJob, WriteResult
from voicestack.store.writer import Writer

log = logging.getLogger(__name__)

# A loop turn's batch larger than this goes to the writer thread: however quick each write,
# the loop would stall for all of them.
MAX_LOOP_BATCH = 64
# The slower mutations a loop turn's batch may hold in all (their expected run times summed;
# quick ones count nothing here, MAX_LOOP_BATCH bounds them): more, and the batch goes to the
# writer thread. Two hand-offs between the loop and that thread took 0.15-0.25 ms on an idle
# 2-core VM (one `messages.send` at a time, timed at each stage), so a lone mutation under a
# millisecond is answered sooner here, and holds the loop no longer than a fan-out batch to a
# few hundred streams does.
SLOW_BUDGET_S = 0.001

T = TypeVar("T")


class LoopCommits:
    """The writes an event loop gathers for its next commit of its own (one loop at a time:
    another loop's writes meanwhile go to the writer thread)."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: list[WriteJob] = []
        self._slow_s = 0.0  # the gathering batch's expected time in slower mutations
        self._guard = threading.Lock()  # loops on other threads, and close()

    def submit(
        self, fn: Callable[[WriteDB], T], slow_s: float = 0.0
    ) -> asyncio.Future[WriteResult[T]]:
        """Run `fn(db)` in a commit made at the end of this loop turn (or by the writer
        thread); the future resolves after COMMIT. Cancelling it before then skips `fn`.
        `slow_s`: the expected run time of a mutation that is not quick (0 for a quick one);
        the batch goes to the writer thread when these add up to more than SLOW_BUDGET_S."""
        loop = asyncio.get_running_loop()
        self._writer.require_running()
        waiter: asyncio.Future[WriteResult[T]] = loop.create_future()
        with self._guard:
            elsewhere = bool(self._jobs) and loop is not self._loop
            if not elsewhere:
                self._jobs.append(WriteJob(fn, waiter=waiter))
                self._slow_s += slow_s
                self._loop = loop
            first = len(self._jobs) == 1
        if elsewhere:  # another loop's batch is gathering
            return self._writer.submit_async(fn)
        if first:
            # Queued behind the callbacks ready now: tasks woken in this turn add theirs
            # first. The mutations run in a context of their own, as on the writer thread,
            # not in the first writer's.
            loop.call_soon(self._commit, context=contextvars.Context())
        return waiter

    def hand_over(self) -> None:
        """Give the writes gathered so far to the writer thread now (the store is closing:
        they commit before it stops)."""
        self._commit(on_loop=False)

    def _commit(self, on_loop: bool = True) -> None:
        with self._guard:
            jobs, self._jobs = self._jobs, []
            slow_s, self._slow_s = self._slow_s, 0.0
        if not jobs:
            return
        on_loop = on_loop and len(jobs) <= MAX_LOOP_BATCH and slow_s <= SLOW_BUDGET_S
        try:
            if not (on_loop and self._writer.commit_on_loop(jobs)):
                self._writer.queue_jobs(jobs)
        except Exception as exc:  # the writer stopped meanwhile
            for job in jobs:
                _fail(job, exc)


def _fail(job: WriteJob, error: BaseException) -> None:
    waiter: asyncio.Future[Any] | None = job.waiter
    if waiter is not None and not waiter.done():
        waiter.set_exception(error)
