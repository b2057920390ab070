"""The single writer thread: mutations queued together share one transaction (group commit).

Each mutation runs inside its own SAVEPOINT, so one that raises rolls back alone while the others
in the same transaction commit. After COMMIT the batch's ChangeSet, with the next version, is
published to the listeners and only then are the callers' futures resolved: the event loop's
callers all at once, with one wake-up of their loop per commit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import apsw

from voicestack.store.changes import (
    ChangeRecorder,
    ChangeSet,
    append_to_log,
    latest_version,
    prune_log,
)
from voicestack.store.db import WriteDB
from voicestack.store.write_lock import WriteLock

log = logging.getLogger(__name__)

WriteFn = Callable[[WriteDB], Any]
CommitListener = Callable[[ChangeSet], None]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WriteResult(Generic[T]):
    """A mutation's return value and the version its commit produced (or the current one)."""

    value: T
    version: int


@dataclass(slots=True)
class _Job:
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


class _Resolutions:
    """A batch's outcomes: thread futures are set at once, tasks' are sent to their loops
    together by `flush`."""

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, _Outcomes] = {}

    def resolve(self, job: _Job, result: Any, error: BaseException | None) -> None:
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
                loop.call_soon_threadsafe(_settle, outcomes)
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

    def record(self, size: int) -> None:
        """Count one committed batch of `size` mutations."""
        self.commits += 1
        self.mutations += size
        self.largest_batch = max(self.largest_batch, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1


_STOP = object()


class Writer:
    """Owns the write connection and runs every mutation on one thread, batched per commit."""

    def __init__(
        self,
        conn: apsw.Connection,
        max_batch: int = 256,
        log_keep: int = 10_000,
        lock: WriteLock | None = None,
    ) -> None:
        self._conn = conn
        self._lock = lock
        self._db = WriteDB(conn)
        self._max_batch = max_batch
        self._log_keep = log_keep
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._listeners: list[CommitListener] = []
        self._recorder = ChangeRecorder()
        self._thread: threading.Thread | None = None
        self.stats = BatchStats()
        conn.set_update_hook(self._recorder.on_update)
        conn.authorizer = _writer_authorizer

    def add_listener(self, listener: CommitListener) -> None:
        """Call `listener(changeset)` on the writer thread after every commit that changed rows."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._run, name="voicestack-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[WriteDB], T]) -> concurrent.futures.Future[WriteResult[T]]:
        """Queue `fn(db)` to run in the next transaction; the future resolves after COMMIT."""
        future: concurrent.futures.Future[WriteResult[T]] = concurrent.futures.Future()
        self._enqueue(_Job(fn, future=future))
        return future

    def submit_async(self, fn: Callable[[WriteDB], T]) -> asyncio.Future[WriteResult[T]]:
        """Like `submit`, from a task of the running event loop: the asyncio future resolves
        after COMMIT, told together with the rest of its commit's tasks. Cancelling it before
        the job runs skips the job."""
        waiter: asyncio.Future[WriteResult[T]] = asyncio.get_running_loop().create_future()
        self._enqueue(_Job(fn, waiter=waiter))
        return waiter

    def _enqueue(self, job: _Job) -> None:
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("The writer is not running: the store is closed or not started.")
        self._queue.put(job)

    def stop(self) -> None:
        """Finish every queued mutation, then stop the thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None

    def _run(self) -> None:
        try:
            self._serve_queue()
        finally:
            if self._lock is not None:
                self._lock.close()

    def _serve_queue(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Job] = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[_Job]) -> None:
        resolutions = _Resolutions()
        try:
            self._commit_jobs(batch, resolutions)
        finally:
            resolutions.flush()

    def _commit_jobs(self, batch: list[_Job], resolutions: _Resolutions) -> None:
        # A caller that gave up (its task was cancelled) cancelled the future: skip its job.
        # A running future can no longer be cancelled, so resolving it after COMMIT is safe.
        pending = [job for job in batch if job.start()]
        while pending:
            try:
                changeset, lost = self._run_transaction(pending)
            except BaseException as exc:  # the transaction itself failed (locked, disk full, ...)
                log.exception("write transaction failed")
                self._recorder.reset()
                for job in pending:
                    resolutions.resolve(job, None, exc)
                return
            if lost is not None:
                # A statement rolled back the whole transaction, not just its savepoint: the
                # jobs before it lost their writes too, so they run again without it.
                resolutions.resolve(lost, None, lost.error or RuntimeError("transaction lost"))
                pending = [job for job in pending if job is not lost]
                for job in pending:
                    job.error = None
                continue
            version = changeset.version if changeset else self._current_version()
            if changeset is not None:
                for listener in self._listeners:
                    try:
                        listener(changeset)
                    except Exception:
                        log.exception("commit listener failed")
            self.stats.record(len(pending))
            for job in pending:
                if job.error is not None:
                    resolutions.resolve(job, None, job.error)
                else:
                    resolutions.resolve(job, WriteResult(job.value, version), None)
            return

    def _current_version(self) -> int:
        return latest_version(self._conn)

    def _run_transaction(self, jobs: list[_Job]) -> tuple[ChangeSet | None, _Job | None]:
        if self._lock is None or not self._lock.acquire():
            return self._transaction(jobs)
        try:
            return self._transaction(jobs)
        finally:
            self._lock.release()

    def _transaction(self, jobs: list[_Job]) -> tuple[ChangeSet | None, _Job | None]:
        conn = self._conn
        self._recorder.reset()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for job in jobs:
                conn.execute("SAVEPOINT mutation")
                try:
                    job.value = job.fn(self._db)
                except BaseException as exc:
                    job.error = exc
                    if conn.in_transaction:
                        conn.execute("ROLLBACK TO mutation")
                        conn.execute("RELEASE mutation")
                        self._recorder.discard_current()
                        continue
                    self._recorder.reset()
                    return None, job
                conn.execute("RELEASE mutation")
                self._recorder.keep_current()
            changeset = None
            if self._recorder.has_changes:
                version = latest_version(conn) + 1
                changeset = self._recorder.to_changeset(version)
                append_to_log(conn, changeset)
                if version % 1000 == 0:
                    prune_log(conn, version, self._log_keep)
            conn.execute("COMMIT")
            return changeset, None
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _writer_authorizer(
    op: int, _arg1: str | None, _arg2: str | None, _db: str | None, _trigger: str | None
) -> int:
    # SQLITE_IGNORE on a DELETE turns off SQLite's truncate optimization, which would otherwise
    # empty a table without firing the update hook for its rows.
    if op == apsw.SQLITE_DELETE:
        return apsw.SQLITE_IGNORE
    return apsw.SQLITE_OK
