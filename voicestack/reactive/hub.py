"""The subscription hub: which queries depend on what, re-running them per commit batch, fan-out.

Identical subscriptions (same function, arguments and user) share one SharedQuery: one run and one
serialized payload however many clients watch it. Commits arrive as ChangeSets from the writer
thread. The hub's loop pins one read snapshot at version V, waits until it holds every ChangeSet up
to V, re-runs exactly the shared queries whose read set those commits touched (plus queries that
new subscribers are waiting for), all in that snapshot, and pushes only values that changed. Every
value a client receives in one batch is therefore consistent at version V. Feeds and commit
observers (voicestack/reactive/listeners.py) read the same snapshot in the same batch.

A light batch, whose commits changed a few listed rows, re-run no query, concern no gate and
admit nobody, is run as soon as the hub hears of its commit (`_light_batch_now`), on the event
loop, when the batch loop is idle: it only hands the feeds and observers their part. A commit
made on the loop itself is fed even sooner, inside the commit, from the rows its writer handed
over (`_feed_at_once`), when it is the next one and its batch would be that light.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from voicestack.functions.registry import ServerFunction
from voicestack.identity import Caller
from voicestack.reactive.channel import Channel, FeedChannel, Outbox
from voicestack.reactive.foreign_commits import ForeignCommits
from voicestack.reactive.inbox import CommitInbox, small_changes
from voicestack.reactive.keepalive import Streams
from voicestack.reactive.listeners import BatchListeners, Feed, FeedJoin, Listeners
from voicestack.reactive.queries import SharedQueries
from voicestack.reactive.query_batches import admit_joins, run_batch_queries
from voicestack.reactive.subscription import Outcome, QueryJoin, SharedQuery, Subscription
from voicestack.store.changes import ChangeSet
from voicestack.store.data_version import DataVersionProbe
from voicestack.store.loop_calls import call_soon_on, on_own_loop
from voicestack.store.observer import CommitObserver
from voicestack.store.readers import ReaderConnection
from voicestack.store.store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long the hub waits for the ChangeSets of a snapshot it already sees before it stops
# trusting its view and re-runs every subscription.
CHANGESET_WAIT_S = 2.0


class Hub:
    """Holds every live subscription and keeps each one's client up to date."""

    def __init__(
        self,
        store: Store,
        ping_s: float = 15.0,
        send_timeout_s: float = 30.0,
        poll_s: float = 0.025,
    ) -> None:
        self._store = store
        self._queries = SharedQueries()
        self._streams = Streams(ping_s, send_timeout_s)
        self._listeners = Listeners()
        self._joins: list[QueryJoin] = []
        self._in_flight: set[SharedQuery] = set()
        self._inbox = CommitInbox()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reader: ReaderConnection | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "voicestack-hub")
        self._reader_calls = 0  # calls on the reader queued or running on the hub's thread
        self._batch_running = False  # the batch loop is inside a batch (maybe awaiting)
        self._closing = False
        self._foreign = ForeignCommits(
            store.notices, poll_s, lambda: self._on_reader(self._read_foreign), self.receive
        )
        self.version = 0
        self.batches = 0
        self.reruns = 0

    async def start(self) -> None:
        """Start listening to commits and running batches on the current event loop."""
        self._loop = asyncio.get_running_loop()
        reader = await self._loop.run_in_executor(self._executor, self._store.reader)
        self._reader = reader
        self.version = await self._loop.run_in_executor(
            self._executor, lambda: reader.read(lambda s: s.version)
        )
        self._inbox = CommitInbox(self.version)
        self._store.add_commit_listener(self._on_commit)
        self._store.add_loop_commit_listener(self._feed_at_once)
        self._tasks = [
            asyncio.create_task(self._batch_loop(), name="voicestack-hub"),
            asyncio.create_task(self._streams.run(), name="voicestack-keepalive"),
            asyncio.create_task(
                self._foreign.run(DataVersionProbe(self._store.path), lambda: self._inbox.received),
                name="voicestack-commit-poll",
            ),
        ]

    def _on_commit(self, changeset: ChangeSet) -> None:
        # On the thread that committed: the writer's, or this loop's own.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            call_soon_on(loop, self.receive, changeset)

    def _feed_at_once(self, changeset: ChangeSet) -> None:
        """Push a commit made on an event loop to the feeds from the rows its writer handed
        over, before the commit's caller hears of it, when the loop is the hub's, the commit is
        the one right after the last batch's and its batch would only feed and tell observers.
        That batch (`receive`, already queued) then finds the events sent."""
        changes = [changeset]
        loop = self._loop
        if (
            loop is not None
            and on_own_loop(loop)
            and self._listeners.feeds_touched(changes)
            and not self._inbox.pending
            and changeset.version == self.version + 1
            and self._only_listeners(changes)
        ):
            self._listeners.feed_remembered(changes)

    def _only_listeners(self, changes: list[ChangeSet]) -> bool:
        """Whether a batch of `changes` now would only hand them to feeds and observers: no
        batch runs or is due, nobody joins, no query re-runs, no gate judges them."""
        return not (
            self._batch_running
            or self._closing
            or self._wake.is_set()
            or self._joins
            or self._listeners.joins_waiting
            or self._queries.invalidated(changes)
            or self._listeners.gated(changes)
        )

    def receive(self, changeset: ChangeSet) -> None:
        """Take a committed ChangeSet (on the event loop): delivered at once when it makes a
        light batch (`_light_batch_now`), else handled by the batch loop."""
        if self._inbox.put(changeset) and not self._light_batch_now():
            self._wake.set()

    def _light_batch_now(self) -> bool:
        """Run the pending commits' batch here, now, when the batch loop would only hand them to
        feeds and observers on the event loop: it is idle, nothing joins, no query re-runs, no
        gate judges, and the commits are few and all known. This spares the batch loop's
        wake-up, a turn of the event loop between a commit and its events reaching watchers.
        False when the batch loop has something to do."""
        pending, reader = self._inbox.pending, self._reader
        if (
            not self._only_listeners(pending)
            or reader is None
            or not self._reader_idle()
            or not small_changes(pending)
            or not self._relevant(pending)
        ):
            return False
        try:
            snapshot = reader.begin()
            try:
                version = snapshot.version
                if self._inbox.received < version:
                    return False  # another process's commit is not in yet: the loop waits
                listeners = self._listeners.take(self._inbox.take(version))
                listeners.feed_first(snapshot)
            finally:
                reader.end()
            self.version = max(self.version, version)
            self.batches += 1
            listeners.deliver()
            self._listeners.batch_done()
        except Exception:
            log.exception("subscription batch failed")
        return not self._inbox.pending

    # -- subscribing ---------------------------------------------------------------------------

    def open_channel(self, multi: bool) -> Channel:
        """A new Channel the hub keeps alive with pings and closes on shutdown."""
        channel = Channel(multi)
        self._streams.add(channel)
        return channel

    def track(self, outbox: Outbox) -> Outbox:
        """Keep `outbox` alive with pings and close it on shutdown, like the hub's own channels."""
        return self._streams.add(outbox)

    def add_observer(self, observer: CommitObserver[Any], gate: bool = False) -> None:
        """Give `observer` every batch of commits that touch its tables; a gate is delivered
        before the batch's values and events (see voicestack/store/observer.py)."""
        self._listeners.add_observer(observer, gate)

    def add_feed(self, feed: Feed[Any]) -> None:
        """Give `feed` every batch of commits that touch its tables, and its joins."""
        self._listeners.add_feed(feed)

    def join_feed(
        self, feed: Feed[Any], key: str, outbox: FeedChannel, cursor: int | None
    ) -> asyncio.Future[None]:
        """Attach `outbox` to `feed`'s stream `key` in the next batch, caught up from `cursor`."""
        assert self._loop is not None, "the hub is not started"
        ready: asyncio.Future[None] = self._loop.create_future()
        self._listeners.join(FeedJoin(feed, key, outbox, cursor, ready))
        self._wake.set()
        return ready

    def close_channel(self, channel: Outbox) -> None:
        """Forget a channel whose connection ended, with all its subscriptions."""
        self._streams.discard(channel)

    def join(
        self,
        subscription: Subscription,
        function: ServerFunction,
        args: BaseModel,
        user: Caller | None,
        last_version: int | None = None,
    ) -> asyncio.Future[None]:
        """Ask for `subscription` to be attached in the next batch; the future says when it is.

        The current value is pushed to the subscription's channel then, unless `last_version`
        shows the client already has it. The future fails with FunctionError when the query
        refuses on its first run. Joins requested together land in the same batch, so their first
        values are one consistent snapshot.
        """
        shared = self._queries.get(function, args, user)
        subscription.shared = shared
        assert self._loop is not None, "the hub is not started"
        ready: asyncio.Future[None] = self._loop.create_future()
        self._joins.append(QueryJoin(subscription, shared, last_version, ready))
        self._wake.set()
        return ready

    async def subscribe(
        self,
        subscription: Subscription,
        function: ServerFunction,
        args: BaseModel,
        user: Caller | None,
        last_version: int | None = None,
    ) -> None:
        """Join and wait until attached; on failure the subscription is detached again."""
        try:
            await self.join(subscription, function, args, user, last_version)
        except BaseException:
            self.unsubscribe(subscription)
            raise

    def unsubscribe(self, subscription: Subscription) -> None:
        """Detach `subscription`; a shared query nobody watches is dropped."""
        shared = subscription.shared
        if shared is None:
            return
        shared.subscriptions.discard(subscription)
        subscription.shared = None
        if not shared.subscriptions and not self._awaited(shared):
            self._queries.drop(shared)

    def _awaited(self, shared: SharedQuery) -> bool:
        return shared in self._in_flight or any(j.shared is shared for j in self._joins)

    @property
    def subscription_count(self) -> int:
        """How many subscriptions are attached in all."""
        return self._queries.subscription_count

    @property
    def shared_count(self) -> int:
        """How many distinct shared queries are live."""
        return len(self._queries)

    # -- batches -------------------------------------------------------------------------------

    async def _batch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending = self._inbox.pending
            joining = bool(self._joins) or self._listeners.joins_waiting
            if not pending and not joining:
                continue
            if not joining and not self._relevant(pending):
                # Nobody watches what these commits changed: no snapshot, no re-run.
                self.version = max(self.version, *(cs.version for cs in self._inbox.take_all()))
                continue
            self._batch_running = True
            try:
                await self._run_batch()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("subscription batch failed")
                self._in_flight = set()
                self._fail_joins("subscription batch failed")
            finally:
                self._batch_running = False

    async def _run_batch(self) -> None:
        loop = asyncio.get_running_loop()
        reader = self._reader
        assert reader is not None
        # Each trip to the hub's thread and back waits its turn on a busy event loop; a small
        # batch (a message, a delta) skips them: opening a snapshot and reading a few rows by
        # rowid take microseconds. The reader is never used from both threads at once.
        snapshot = reader.begin() if self._reader_idle() else await self._on_reader(reader.begin)
        ended = False

        def execute_then_end(
            to_run: set[SharedQuery], joins: list[QueryJoin], listeners: BatchListeners
        ) -> tuple[dict[SharedQuery, Outcome], set[int]]:
            # The snapshot ends in the same trip to the hub's thread as the queries.
            nonlocal ended
            try:
                return run_batch_queries(snapshot, to_run, joins, listeners)
            finally:
                ended = True
                reader.end()

        try:
            version = snapshot.version
            trusted = await self._inbox.wait_for(version, CHANGESET_WAIT_S)
            if not trusted:
                log.warning("commit %d not announced in time; re-running every query", version)
            changes = self._inbox.take(version)
            if self._inbox.pending:
                self._wake.set()
            stale = self._queries.invalidated(changes) if trusted else self._queries.all()
            joins, self._joins = self._joins, []
            self._in_flight = {j.shared for j in joins}
            to_run = stale | {j.shared for j in joins if j.shared.payload is None}
            listeners = self._listeners.take(changes)
            if (
                not to_run
                and not joins
                and listeners.light
                and self._reader_idle()
                and small_changes(changes)
            ):
                # No gate, query or join: the feeds' events may go out at once.
                listeners.feed_first(snapshot)
                outcomes: dict[SharedQuery, Outcome] = {}
                current: set[int] = set()
                ended = True
                reader.end()
            else:
                outcomes, current = await self._on_reader(
                    lambda: execute_then_end(to_run, joins, listeners)
                )
        finally:
            if not ended:
                if self._reader_idle():
                    reader.end()
                else:
                    await self._on_reader(reader.end)
            self._foreign.snapshot_ended()
        self.version = max(self.version, version)
        self.batches += 1
        self.reruns += len(outcomes)
        # A gate (the access guard) decides first: a stream it holds or ends at this version
        # gets nothing of this version, neither query values nor feed events.
        listeners.deliver_gates()
        self._queries.apply(outcomes, version, loop.time())
        admit_joins(self._queries, joins, current, version)
        listeners.deliver()
        self._listeners.batch_done()
        in_flight, self._in_flight = self._in_flight, set()
        for shared in in_flight:
            if not shared.subscriptions and not self._awaited(shared):
                self._queries.drop(shared)

    def _reader_idle(self) -> bool:
        return self._reader_calls == 0

    async def _on_reader(self, fn: Callable[[], T]) -> T:
        """Run `fn` (which uses the hub's reader) on the hub's thread. Cancelled, it still
        waits for `fn` to return before it raises: the thread goes on with `fn` regardless, and
        the reader is not free until then (ending its snapshot from the loop meanwhile would
        fail, and that failure would swallow the cancellation)."""
        self._reader_calls += 1
        running = asyncio.get_running_loop().run_in_executor(self._executor, fn)
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            await asyncio.wait([running])
            raise
        finally:
            self._reader_calls -= 1

    def _relevant(self, changes: list[ChangeSet]) -> bool:
        watched = self._listeners.watched_tables()
        for changeset in changes:
            for table in changeset.tables:
                if self._queries.reads(table) or any(table in tables for tables in watched):
                    return True
        return False

    def _fail_joins(self, reason: str) -> None:
        for join in self._joins:
            if not join.ready.done():
                join.ready.set_exception(RuntimeError(reason))
        self._joins.clear()
        self._listeners.fail_joins(reason)

    # -- commits made by other processes ---------------------------------------------------

    @property
    def foreign_reads(self) -> int:
        """How many times the hub has read the change log for other processes' commits."""
        return self._foreign.reads

    def _read_foreign(self) -> list[ChangeSet]:
        reader = self._reader
        if reader is None:
            return []
        if reader.conn.in_transaction:  # a batch's: the batch waits for the commits it holds
            self._foreign.reading_in_snapshot()
        return self._inbox.read_foreign(reader.conn)

    # -- shutdown ---------------------------------------------------------------

    def close_streams(self, which: Callable[[Outbox], bool] | None = None) -> None:
        """End every open stream (or those `which` selects) once its pending values are sent
        (shutdown has begun)."""
        self._streams.close_all(which)

    async def close(self) -> None:
        """End every stream (pending values are still sent) and stop the hub's tasks."""
        self._closing = True
        self.close_streams()
        self._foreign.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._fail_joins("the server is shutting down")
        if self._reader is not None:
            reader = self._reader
            self._reader = None
            await asyncio.get_running_loop().run_in_executor(self._executor, reader.close)
        self._executor.shutdown(wait=True)
