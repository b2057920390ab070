"""A write's job and how its caller is told: the result after COMMIT, a thread's future set at
once, a batch's tasks told together with one wake-up of their event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from voicestack.store.db import WriteDB
from voicestack.store.loop_calls import call_soon_on

log = logging.getLogger(__name__)

WriteFn = Callable[[WriteDB], Any]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WriteResult(Generic[T]):
    """A mutation's return value and the version its commit produced (or the current one)."""

    value: T
    version: int


@dataclass(slots=True)
class WriteJob:
    """A queued mutation, and who waits for it: a thread (`future`) or a task (`waiter`)."""

    fn: WriteFn
    future: concurrent.futures.Future[WriteResult[Any]] | None = None
    waiter: asyncio.Future[WriteResult[Any]] | None = None
    value: Any = None
    error: BaseException | None = None

    def start(self) -> bool:
        """False when its caller gave up before the job ran; the job is then skipped. A task
        that gives up later finds its job committed anyway, as a running thread future would."""
        if self.future is not None:
            return self.future.set_running_or_notify_cancel()
        return self.waiter is not None and not self.waiter.cancelled()


# What a batch's waiting tasks are told, per event loop: each waiter with its result or error.
_Outcomes = list[tuple["asyncio.Future[WriteResult[Any]]", Any, BaseException | None]]


def _settle(outcomes: _Outcomes) -> None:
    # Runs on the waiters' loop; a waiter cancelled since the commit has nobody left to tell.
    for waiter, result, error in outcomes:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(result)
        elif isinstance(error, StopIteration):
            # A future refuses StopIteration, which would end the awaiting coroutine: it
            # becomes the RuntimeError a coroutine raising it would give (PEP 479).
            waiter.set_exception(RuntimeError(f"the mutation raised StopIteration: {error!r}"))
        else:
            waiter.set_exception(error)


class Resolutions:
    """A batch's outcomes: thread futures are set at once, tasks' are sent to their loops
    together by `flush`."""

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, _Outcomes] = {}

    def resolve(self, job: WriteJob, result: Any, error: BaseException | None) -> None:
        if job.future is not None:
            if job.future.done():
                return
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)
        elif job.waiter is not None:
            self._by_loop.setdefault(job.waiter.get_loop(), []).append((job.waiter, result, error))

    def flush(self) -> None:
        for loop, outcomes in self._by_loop.items():
            try:
                call_soon_on(loop, _settle, outcomes)
            except RuntimeError:  # the loop closed: its tasks are gone
                log.debug("a write's event loop closed before its commit was told")
        self._by_loop = {}


@dataclass
class BatchStats:
    """Counters describing group commit, for benchmarks and diagnostics."""

    commits: int = 0
    mutations: int = 0
    largest_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)
    on_loop: int = 0  # commits an event loop made itself

    def record(self, size: int, on_loop: bool = False) -> None:
        """Count one committed batch of `size` mutations (committed on an event loop)."""
        self.commits += 1
        self.on_loop += on_loop
        self.mutations += size
        self.largest_batch = max(self.largest_batch, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1
