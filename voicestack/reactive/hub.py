"""The subscription hub: which queries depend on what, re-running them per commit batch, fan-out.

Identical subscriptions (same function, arguments and user) share one SharedQuery: one run and one
serialized payload however many clients watch it. Commits arrive as ChangeSets from the writer
thread. The hub's loop pins one read snapshot at version V, waits until it holds every ChangeSet up
to V, re-runs exactly the shared queries whose read set those commits touched (plus queries that
new subscribers are waiting for), all in that snapshot, and pushes only values that changed. Every
value a client receives in one batch is therefore consistent at version V.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel

from voicestack.functions.errors import FunctionError
from voicestack.functions.registry import ServerFunction
from voicestack.identity import Caller
from voicestack.reactive.channel import Channel, ErrorPayload, Outbox, Payload
from voicestack.reactive.inbox import CommitInbox
from voicestack.reactive.keepalive import Streams
from voicestack.reactive.subscription import (
    FeedJoin,
    FeedSource,
    Outcome,
    QueryJoin,
    SharedQuery,
    Subscription,
    run_query,
    shared_key,
)
from voicestack.store.changes import ChangeSet, changed_since
from voicestack.store.readers import ReaderConnection, Snapshot
from voicestack.store.store import Store

log = logging.getLogger(__name__)

# How long the hub waits for the ChangeSets of a snapshot it already sees before it stops
# trusting its view and re-runs every subscription.
CHANGESET_WAIT_S = 2.0
# A feed source, the batch's commits that touched its tables, and its joins of the batch.
FeedWork = tuple[FeedSource, list[ChangeSet], list[FeedJoin]]


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
        self._shared: dict[tuple, SharedQuery] = {}
        self._by_table: dict[str, set[SharedQuery]] = defaultdict(set)
        self._streams = Streams(ping_s, send_timeout_s)
        self._sources: list[FeedSource] = []
        self._feed_joins: list[FeedJoin] = []
        self._batch_feed_joins: list[FeedJoin] = []
        self._joins: list[QueryJoin] = []
        self._in_flight: set[SharedQuery] = set()
        self._inbox = CommitInbox()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reader: ReaderConnection | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "voicestack-hub")
        self._poll_s = poll_s
        self.version = 0
        self.batches = 0
        self.reruns = 0

    async def start(self) -> None:
        """Start listening to commits and running batches on the current event loop."""
        self._loop = asyncio.get_running_loop()
        self._reader = await self._loop.run_in_executor(self._executor, self._store.reader)
        self.version = await self._loop.run_in_executor(
            self._executor, lambda: self._reader.read(lambda s: s.version)
        )
        self._inbox = CommitInbox(self.version)
        self._store.add_commit_listener(self._on_commit_threadsafe)
        self._tasks = [
            asyncio.create_task(self._batch_loop(), name="voicestack-hub"),
            asyncio.create_task(self._streams.run(), name="voicestack-keepalive"),
            asyncio.create_task(self._foreign_commit_loop(), name="voicestack-commit-poll"),
        ]

    def _on_commit_threadsafe(self, changeset: ChangeSet) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.receive, changeset)

    def receive(self, changeset: ChangeSet) -> None:
        """Take a committed ChangeSet (on the event loop); the batch loop handles it."""
        if self._inbox.put(changeset):
            self._wake.set()

    # -- subscribing ---------------------------------------------------------------------------

    def open_channel(self, multi: bool) -> Channel:
        """A new Channel the hub keeps alive with pings and closes on shutdown."""
        channel = Channel(multi)
        self._streams.add(channel)
        return channel

    def track(self, outbox: Outbox) -> Outbox:
        """Keep `outbox` alive with pings and close it on shutdown, like the hub's own channels."""
        return self._streams.add(outbox)

    def add_source(self, source: FeedSource) -> None:
        """Give `source` every batch of commits that touch its tables."""
        self._sources.append(source)

    def join_feed(
        self, source: FeedSource, key: str, outbox: Outbox, cursor: int | None
    ) -> asyncio.Future[None]:
        """Attach `outbox` to `source`'s feed `key` in the next batch, caught up from `cursor`."""
        assert self._loop is not None, "the hub is not started"
        ready: asyncio.Future[None] = self._loop.create_future()
        self._feed_joins.append(FeedJoin(source, key, outbox, cursor, ready))
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
        key = shared_key(function, args, user)
        shared = self._shared.get(key)
        if shared is None:
            shared = SharedQuery(function, args, user, key)
            self._shared[key] = shared
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
            self._drop(shared)

    def _awaited(self, shared: SharedQuery) -> bool:
        return shared in self._in_flight or any(j.shared is shared for j in self._joins)

    def _drop(self, shared: SharedQuery) -> None:
        if self._shared.get(shared.key) is shared:
            del self._shared[shared.key]
        for table in shared.tables:
            watchers = self._by_table.get(table)
            if watchers is not None:
                watchers.discard(shared)
                if not watchers:
                    del self._by_table[table]

    @property
    def subscription_count(self) -> int:
        """How many subscriptions are attached in all."""
        return sum(len(s.subscriptions) for s in self._shared.values())

    @property
    def shared_count(self) -> int:
        """How many distinct shared queries are live."""
        return len(self._shared)

    # -- batches -------------------------------------------------------------------------------

    async def _batch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending = self._inbox.pending
            if not pending and not self._joins and not self._feed_joins:
                continue
            if not self._joins and not self._feed_joins and not self._relevant(pending):
                # Nobody watches what these commits changed: no snapshot, no re-run.
                self.version = max(self.version, *(cs.version for cs in self._inbox.take_all()))
                continue
            try:
                await self._run_batch()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("subscription batch failed")
                self._in_flight = set()
                failed = [*self._joins, *self._feed_joins, *self._batch_feed_joins]
                for join in failed:
                    if not join.ready.done():
                        join.ready.set_exception(RuntimeError("subscription batch failed"))
                self._joins.clear()
                self._feed_joins.clear()
                self._batch_feed_joins = []

    async def _run_batch(self) -> None:
        loop = asyncio.get_running_loop()
        reader = self._reader
        assert reader is not None
        snapshot = await loop.run_in_executor(self._executor, reader.begin)
        try:
            version = snapshot.version
            trusted = await self._inbox.wait_for(version, CHANGESET_WAIT_S)
            if not trusted:
                log.warning("commit %d not announced in time; re-running every query", version)
            changes = self._inbox.take(version)
            if self._inbox.pending:
                self._wake.set()
            stale = self._invalidated(changes) if trusted else set(self._shared.values())
            joins, self._joins = self._joins, []
            self._in_flight = {j.shared for j in joins}
            to_run = stale | {j.shared for j in joins if j.shared.payload is None}
            feed_joins, self._feed_joins = self._feed_joins, []
            self._batch_feed_joins = feed_joins
            feeds = self._feed_work(changes, feed_joins)
            outcomes, current, collected = await loop.run_in_executor(
                self._executor, lambda: self._execute(snapshot, to_run, joins, feeds)
            )
        finally:
            await loop.run_in_executor(self._executor, reader.end)
        self.version = max(self.version, version)
        self.batches += 1
        self.reruns += len(outcomes)
        # A gate (the access guard) decides first: a stream it holds or ends at this version
        # gets nothing of this version, neither query values nor feed events.
        self._deliver(feeds, collected, gates=True)
        self._apply(outcomes, version)
        self._admit(joins, current, version)
        self._deliver(feeds, collected, gates=False)
        self._batch_feed_joins = []
        in_flight, self._in_flight = self._in_flight, set()
        for shared in in_flight:
            if not shared.subscriptions and not self._awaited(shared):
                self._drop(shared)

    def _deliver(self, feeds: list[FeedWork], collected: list[Any], gates: bool) -> None:
        for (source, _changes, source_joins), result in zip(feeds, collected, strict=True):
            if getattr(source, "gate", False) is gates:
                source.deliver(result, source_joins)

    def _relevant(self, changes: list[ChangeSet]) -> bool:
        watched = [s.tables for s in self._sources if getattr(s, "active", True)]
        for changeset in changes:
            for table in changeset.tables:
                if table in self._by_table or any(table in tables for tables in watched):
                    return True
        return False

    def _invalidated(self, changes: Iterable[ChangeSet]) -> set[SharedQuery]:
        stale: set[SharedQuery] = set()
        for changeset in changes:
            for table in changeset.tables:
                watchers = self._by_table.get(table)
                if watchers:
                    stale |= watchers
        return stale

    def _feed_work(self, changes: list[ChangeSet], joins: list[FeedJoin]) -> list[FeedWork]:
        work = []
        for source in self._sources:
            relevant = [cs for cs in changes if cs.touches(source.tables)]
            source_joins = [j for j in joins if j.source is source]
            if relevant or source_joins:
                work.append((source, relevant, source_joins))
        return work

    def _execute(
        self,
        snapshot: Snapshot,
        to_run: set[SharedQuery],
        joins: list[QueryJoin],
        feeds: list[FeedWork],
    ) -> tuple[dict[SharedQuery, Outcome], set[int], list[Any]]:
        """Runs on the hub's reader thread, inside the pinned snapshot."""
        outcomes = {shared: run_query(snapshot, shared) for shared in to_run}
        collected = [source.collect(snapshot, changes, fj) for source, changes, fj in feeds]
        current: set[int] = set()
        for index, join in enumerate(joins):
            outcome = outcomes.get(join.shared)
            tables = outcome.tables if outcome else join.shared.tables
            if join.last_version is not None and not changed_since(
                snapshot.conn, join.last_version, snapshot.version, tables
            ):
                current.add(index)
        return outcomes, current, collected

    def _apply(self, outcomes: dict[SharedQuery, Outcome], version: int) -> None:
        ending: set[Channel] = set()
        for shared, outcome in outcomes.items():
            if self._shared.get(shared.key) is not shared:
                continue  # dropped while it ran
            self._index(shared, outcome.tables)
            if outcome.error is not None:
                payload: Payload | ErrorPayload = ErrorPayload(
                    outcome.error.code,
                    outcome.error.message,
                    version,
                    outcome.error.status,
                    outcome.error.ends_subscription,
                )
            elif isinstance(shared.payload, Payload) and (
                shared.payload.value_json == outcome.value_json
            ):
                continue
            else:
                assert outcome.value_json is not None
                payload = Payload(outcome.value_json, version)
            shared.payload = payload
            shared.changed_version = version
            shared.fan_out(payload, self._loop.time() if self._loop is not None else 0.0)
            if isinstance(payload, ErrorPayload) and payload.final:
                ending.update(subscription.channel for subscription in shared.subscriptions)
        # Access is gone: the error goes out with the rest of this version, then the stream
        # ends (all of a multi-watch, which could no longer be served as it was asked for).
        for channel in ending:
            channel.close()

    def _admit(self, joins: list[QueryJoin], current: set[int], version: int) -> None:
        for index, join in enumerate(joins):
            shared, subscription = join.shared, join.subscription
            if join.ready.done():  # the subscriber went away while it waited
                continue
            payload = shared.payload
            if isinstance(payload, ErrorPayload) and (payload.final or not shared.subscriptions):
                if not shared.subscriptions:
                    self._drop(shared)
                join.ready.set_exception(
                    FunctionError(payload.code, payload.message, payload.status)
                )
                continue
            shared.subscriptions.add(subscription)
            if index not in current and payload is not None:
                if isinstance(payload, Payload) and payload.version != version:
                    payload = Payload(payload.value_json, version)
                subscription.channel.push(subscription.sub_id, payload)
            join.ready.set_result(None)

    def _index(self, shared: SharedQuery, tables: frozenset[str]) -> None:
        if tables == shared.tables:
            return
        for table in shared.tables - tables:
            watchers = self._by_table.get(table)
            if watchers is not None:
                watchers.discard(shared)
        for table in tables - shared.tables:
            self._by_table[table].add(shared)
        shared.tables = tables

    # -- commits made by other processes ---------------------------------------------------

    async def _foreign_commit_loop(self) -> None:
        # apsw hooks only see this process's writer; another process on the same file shows up
        # as a new `PRAGMA data_version` on our reader, and its commits are in the change log.
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                changesets = await loop.run_in_executor(self._executor, self._read_foreign)
            except Exception:
                log.exception("reading the change log failed")
                continue
            for changeset in changesets:
                self.receive(changeset)

    def _read_foreign(self) -> list[ChangeSet]:
        reader = self._reader
        return self._inbox.read_foreign(reader.conn) if reader is not None else []

    # -- shutdown ---------------------------------------------------------------

    def close_streams(self, which: Callable[[Outbox], bool] | None = None) -> None:
        """End every open stream (or those `which` selects) once its pending values are sent
        (shutdown has begun)."""
        self._streams.close_all(which)

    async def close(self) -> None:
        """End every stream (pending values are still sent) and stop the hub's tasks."""
        self.close_streams()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for join in [*self._joins, *self._feed_joins]:
            if not join.ready.done():
                join.ready.set_exception(RuntimeError("the server is shutting down"))
        if self._reader is not None:
            reader = self._reader
            self._reader = None
            await asyncio.get_running_loop().run_in_executor(self._executor, reader.close)
        self._executor.shutdown(wait=True)
