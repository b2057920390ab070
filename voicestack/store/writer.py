"""The single writer: mutations queued together share one transaction (group commit).

Each mutation of a batch runs inside its own SAVEPOINT, so one that raises rolls back alone while
the others in the same transaction commit; a batch of one rolls its whole transaction back. After
COMMIT the batch's ChangeSet, with the next version, is published to the listeners and only then
are the callers' futures resolved: the event loop's callers all at once, with one wake-up of their
loop per commit.

Batches normally run on the writer thread. An event loop may also commit a batch itself
(`commit_on_loop`, voicestack/store/loop_commits.py) when nothing else is writing at that moment:
the writer thread idle with nothing queued, the file's lock free, SQLite's write lock free.
Whichever thread commits, WAL checkpoints run on the writer thread only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import apsw

from voicestack.store.changes import (
    ChangeRecorder,
    ChangeSet,
    append_to_log,
    latest_version,
    prune_log,
)
from voicestack.store.connection import BUSY_TIMEOUT_MS
from voicestack.store.db import WriteDB
from voicestack.store.write_jobs import BatchStats, Resolutions, WriteJob, WriteResult
from voicestack.store.write_lock import WriteLock

log = logging.getLogger(__name__)

CommitListener = Callable[[ChangeSet], None]
T = TypeVar("T")


_STOP = object()
_CHECKPOINT = object()  # queued by a commit on a loop that filled the WAL


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
        self._max_batch = max_batch
        self._log_keep = log_keep
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Items put on the queue and not yet done with: a loop commits only when none are.
        self._outstanding = 0
        self._outstanding_guard = threading.Lock()
        self._listeners: list[CommitListener] = []
        self._loop_listeners: list[CommitListener] = []
        self._recorder = ChangeRecorder()
        self._db = WriteDB(conn, self._recorder.remember)
        self._thread: threading.Thread | None = None
        self._stopping = False
        # Held while a batch runs, on the writer thread or on a loop: one at a time.
        self._busy = threading.Lock()
        # A PASSIVE checkpoint follows each commit that leaves this many pages in the WAL, as
        # SQLite's autocheckpoint would (0, as Litestream's deployments set it: never). The WAL
        # hook replaces that autocheckpoint, which would run inside a COMMIT on whatever thread
        # made it, a loop's included: the writer thread checkpoints instead.
        self._checkpoint_pages = int(conn.pragma("wal_autocheckpoint"))
        self._wal_pages = 0
        # Checkpoints use a connection of their own, so that commits go on meanwhile.
        self._checkpointer: apsw.Connection | None = None
        self._filename = conn.filename  # read now: apsw refuses a connection busy elsewhere
        self.stats = BatchStats()
        conn.set_update_hook(self._recorder.on_update)
        conn.authorizer = _writer_authorizer
        conn.set_wal_hook(self._on_wal)

    def add_listener(self, listener: CommitListener) -> None:
        """Call `listener(changeset)` after every commit that changed rows, on the thread that
        made it: the writer thread, or an event loop's (`commit_on_loop`)."""
        self._listeners.append(listener)

    def add_loop_listener(self, listener: CommitListener) -> None:
        """Call `listener(changeset)` after every commit an event loop made itself
        (`commit_on_loop`), on that loop's thread, after the commit listeners: once the writer
        and the file's lock are free again, before the commit's callers are told."""
        self._loop_listeners.append(listener)

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._run, name="voicestack-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[WriteDB], T]) -> concurrent.futures.Future[WriteResult[T]]:
        """Queue `fn(db)` to run in the next transaction; the future resolves after COMMIT."""
        future: concurrent.futures.Future[WriteResult[T]] = concurrent.futures.Future()
        self.queue_jobs([WriteJob(fn, future=future)])
        return future

    def submit_async(self, fn: Callable[[WriteDB], T]) -> asyncio.Future[WriteResult[T]]:
        """Like `submit`, from a task of the running event loop: the asyncio future resolves
        after COMMIT, told together with the rest of its commit's tasks. Cancelling it before
        the job runs skips the job."""
        waiter: asyncio.Future[WriteResult[T]] = asyncio.get_running_loop().create_future()
        self.queue_jobs([WriteJob(fn, waiter=waiter)])
        return waiter

    def require_running(self) -> None:
        """Raise RuntimeError unless the writer thread is running and not stopping."""
        if self._stopping or self._thread is None or not self._thread.is_alive():
            raise RuntimeError("The writer is not running: the store is closed or not started.")

    def queue_jobs(self, jobs: list[WriteJob]) -> None:
        """Hand `jobs` to the writer thread, in order."""
        self.require_running()
        self._put(*jobs)

    def _put(self, *items: object) -> None:
        with self._outstanding_guard:
            self._outstanding += len(items)
        for item in items:
            self._queue.put(item)

    def _done_with(self, count: int) -> None:
        with self._outstanding_guard:
            self._outstanding -= count

    def commit_on_loop(self, jobs: list[WriteJob]) -> bool:
        """Commit `jobs` as one batch on the calling event loop's thread, now, if nothing else
        is writing: False (nothing done) when the writer thread has work queued or running,
        another process holds the file's lock, or SQLite's write lock is taken. Their waiters
        are told as the writer thread's are, on this loop, after the commit listeners."""
        self.require_running()
        if self._outstanding or not self._busy.acquire(blocking=False):
            return False
        resolutions = Resolutions()
        committed: ChangeSet | None = None
        try:
            if self._outstanding:
                return False  # queued meanwhile: it goes first
            if self._lock is not None and not self._lock.try_acquire():
                return False
            try:
                if not self._begin_at_once():
                    return False
                committed = self._commit_jobs(jobs, resolutions, on_loop=True)
            finally:
                if self._lock is not None:
                    self._lock.release()
            if self._checkpoint_due():
                self._queue.put(_CHECKPOINT)  # not a write: commits need not wait for it
            return True
        finally:
            self._busy.release()
            if committed is not None:
                _tell(self._loop_listeners, committed)
            resolutions.flush()

    def _begin_at_once(self) -> bool:
        # A loop must never sleep in SQLite's busy handler: a writer outside voicestack (the
        # CLI, a backup) holding the lock sends the batch to the writer thread instead.
        self._conn.set_busy_timeout(0)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except apsw.BusyError:
            return False
        finally:
            self._conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        return True

    def _on_wal(self, _conn: apsw.Connection, _db: str, pages: int) -> int:
        self._wal_pages = pages
        return apsw.SQLITE_OK

    def _checkpoint_due(self) -> bool:
        return 0 < self._checkpoint_pages <= self._wal_pages

    def _checkpoint(self) -> None:
        self._wal_pages = 0
        try:
            if self._checkpointer is None:
                flags = apsw.SQLITE_OPEN_READWRITE  # the file exists: never create another
                checkpointer = apsw.Connection(self._filename, flags=flags)
                # A new connection knows the file is in WAL mode only once it has read it:
                # until then its checkpoints do nothing.
                checkpointer.pragma("journal_mode")
                self._checkpointer = checkpointer
            self._checkpointer.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
        except apsw.BusyError:
            # Another process (or Litestream) is checkpointing: SQLite's own autocheckpoint
            # passes over this quietly too.
            log.debug("WAL checkpoint skipped: another connection is checkpointing")
        except Exception:
            log.exception("WAL checkpoint failed")  # as SQLite's own would, the commit stands

    def stop(self) -> None:
        """Finish every queued mutation, then stop the thread."""
        if self._thread is None:
            return
        self._stopping = True
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None

    def _run(self) -> None:
        try:
            self._serve_queue()
        finally:
            self._refuse_leftovers()
            if self._lock is not None:
                self._lock.close()
            if self._checkpointer is not None:
                self._checkpointer.close()

    def _refuse_leftovers(self) -> None:
        # Jobs that reached the queue behind _STOP (handed over by a loop as another thread
        # stopped the writer) are told so rather than left waiting.
        resolutions = Resolutions()
        stopped = RuntimeError("The writer is not running: the store is closed or not started.")
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, WriteJob) and item.start():
                resolutions.resolve(item, None, stopped)
        resolutions.flush()

    def _serve_queue(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            if item is _CHECKPOINT:  # without taking the writer: a loop may commit meanwhile
                if self._checkpoint_due():
                    self._checkpoint()
                continue
            batch: list[WriteJob] = []
            taken = 0
            resolutions = Resolutions()
            with self._busy:
                while True:
                    if item is _STOP:
                        stopping = True
                    elif item is not _CHECKPOINT:
                        taken += 1
                        batch.append(item)
                    if stopping or len(batch) >= self._max_batch:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                try:
                    if batch:
                        self._commit_jobs(batch, resolutions)
                finally:
                    self._done_with(taken)
            # Told with the lock released, so that a task writing again at once finds the
            # writer free; a loop may commit while the checkpoint runs.
            resolutions.flush()
            if self._checkpoint_due():
                self._checkpoint()

    def _commit_jobs(
        self, batch: list[WriteJob], resolutions: Resolutions, on_loop: bool = False
    ) -> ChangeSet | None:
        """Commit `batch`; the ChangeSet committed, if rows changed. `on_loop`: a loop's batch,
        whose caller holds the locks and has begun the transaction; a retry goes to the writer
        thread."""
        # A caller that gave up (its task was cancelled) cancelled the future: skip its job.
        # A running future can no longer be cancelled, so resolving it after COMMIT is safe.
        pending = [job for job in batch if job.start()]
        if on_loop and not pending:
            self._conn.execute("ROLLBACK")
        while pending:
            try:
                if on_loop:
                    changeset, lost = self._transaction(pending, begun=True)
                else:
                    changeset, lost = self._run_transaction(pending)
            except BaseException as exc:  # the transaction itself failed (locked, disk full, ...)
                log.exception("write transaction failed")
                self._recorder.reset()
                for job in pending:
                    resolutions.resolve(job, None, exc)
                return None
            if lost is not None:
                # A statement rolled back the whole transaction, not just its savepoint: the
                # jobs before it lost their writes too, so they run again without it.
                resolutions.resolve(lost, None, lost.error or RuntimeError("transaction lost"))
                pending = [job for job in pending if job is not lost]
                for job in pending:
                    job.error = None
                if on_loop:
                    # Begun again, the transaction could wait in SQLite's busy handler.
                    self._put(*pending)
                    return None
                continue
            version = changeset.version if changeset else self._current_version()
            if changeset is not None:
                _tell(self._listeners, changeset)
            self.stats.record(len(pending), on_loop)
            for job in pending:
                if job.error is not None:
                    resolutions.resolve(job, None, job.error)
                else:
                    resolutions.resolve(job, WriteResult(job.value, version), None)
            return changeset
        return None

    def _current_version(self) -> int:
        return latest_version(self._conn)

    def _run_transaction(self, jobs: list[WriteJob]) -> tuple[ChangeSet | None, WriteJob | None]:
        if self._lock is None or not self._lock.acquire():
            return self._transaction(jobs)
        try:
            return self._transaction(jobs)
        finally:
            self._lock.release()

    def _transaction(
        self, jobs: list[WriteJob], begun: bool = False
    ) -> tuple[ChangeSet | None, WriteJob | None]:
        conn = self._conn
        self._recorder.reset()
        if not begun:
            conn.execute("BEGIN IMMEDIATE")
        # A lone mutation needs no savepoint: rolling the whole transaction back undoes it
        # alone. A savepoint keeps a copy of every page the mutation changes (a message's send
        # changes about 20), past 64 KiB in a temporary file, work for nothing when it succeeds.
        lone = len(jobs) == 1
        try:
            for job in jobs:
                if not lone:
                    conn.execute("SAVEPOINT mutation")
                try:
                    job.value = job.fn(self._db)
                except BaseException as exc:
                    job.error = exc
                    if not conn.in_transaction:  # SQLite rolled the whole transaction back
                        self._recorder.reset()
                        return None, job
                    if lone:
                        conn.execute("ROLLBACK")
                        self._recorder.reset()
                        return None, None
                    conn.execute("ROLLBACK TO mutation")
                    conn.execute("RELEASE mutation")
                    self._recorder.discard_current()
                    continue
                if lone and not conn.in_transaction:
                    # It ended the transaction itself (caught a ROLLBACK, or committed): what
                    # it wrote is not this batch's to log or publish.
                    job.error = RuntimeError("The mutation ended its own transaction.")
                    self._recorder.reset()
                    return None, job
                if not lone:
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


def _tell(listeners: list[CommitListener], changeset: ChangeSet) -> None:
    for listener in listeners:
        try:
            listener(changeset)
        except Exception:
            log.exception("commit listener failed")


def _writer_authorizer(
    op: int, _arg1: str | None, _arg2: str | None, _db: str | None, _trigger: str | None
) -> int:
    # SQLITE_IGNORE on a DELETE turns off SQLite's truncate optimization, which would otherwise
    # empty a table without firing the update hook for its rows.
    if op == apsw.SQLITE_DELETE:
        return apsw.SQLITE_IGNORE
    return apsw.SQLITE_OK
