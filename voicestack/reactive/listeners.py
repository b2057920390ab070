"""Who hears of a hub batch besides the queries: feeds and commit observers, and in what order.

A Feed turns commits into appended events (a thread feed) and admits clients that join it,
caught up inside the batch's snapshot. A CommitObserver (voicestack/store/observer.py) only reacts
to commits. Gates, the observers that decide whether a stream may still be sent anything, are
delivered before the batch's query values and feed events; feeds and the other observers after.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from voicestack.reactive.channel import FeedChannel
from voicestack.store.changes import ChangeSet
from voicestack.store.observer import CommitObserver
from voicestack.store.readers import Snapshot

Collected = TypeVar("Collected")


class Feed(Protocol[Collected]):
    """Turns commits into appended events for the outboxes that joined it.

    `collect` runs inside the batch's snapshot (on the hub's reader thread, or on the event
    loop for a small batch without joins) with the batch's commits that touched `tables` and
    the batch's joins; `deliver` runs on the event loop with
    what `collect` returned, after the batch's query values, and resolves the joins' futures.
    """

    @property
    def tables(self) -> frozenset[str]:
        """The tables whose commits may append events."""
        ...

    @property
    def active(self) -> bool:
        """False while nobody watches: the hub then skips batches that only touch `tables`."""
        ...

    def collect(
        self, snapshot: Snapshot, changes: list[ChangeSet], joins: list[FeedJoin]
    ) -> Collected:
        """Read what the batch's commits appended, and each join's catch-up."""
        ...

    def deliver(self, collected: Collected, joins: list[FeedJoin]) -> None:
        """Push what was collected to outboxes and admit the joins."""
        ...

    def deliver_remembered(self, changes: list[ChangeSet]) -> bool:
        """Push what `changes`, the commits right after the last batch's, appended, from the
        values their writer handed over (ChangeSet.remembered), at once and without reading;
        False, and nothing pushed, when those do not tell all of it."""
        ...


@dataclass(eq=False)
class FeedJoin:
    """A client joining a feed after event `cursor` (None: from a snapshot), caught up."""

    feed: Feed[Any]
    key: str
    outbox: FeedChannel
    cursor: int | None
    ready: asyncio.Future[None]


@dataclass(eq=False, slots=True)
class _Observed:
    observer: CommitObserver[Any]
    changes: list[ChangeSet]
    collected: Any = None


@dataclass(eq=False, slots=True)
class _Fed:
    feed: Feed[Any]
    changes: list[ChangeSet]
    joins: list[FeedJoin]
    collected: Any = None


@dataclass(slots=True)
class BatchListeners:
    """The feeds and observers one batch concerns, with what each collected."""

    gates: list[_Observed] = field(default_factory=list)
    feeds: list[_Fed] = field(default_factory=list)
    observers: list[_Observed] = field(default_factory=list)
    feeds_delivered: bool = False

    @property
    def light(self) -> bool:
        """Whether collecting is a few reads by rowid: no gate re-judges its streams (auth or
        membership changed) and no feed catches a joining client up."""
        return not self.gates and not any(fed.joins for fed in self.feeds)

    def collect(self, snapshot: Snapshot) -> None:
        """Let each one read the batch's snapshot, on the hub's reader thread (a small, light
        batch read on the event loop goes through `feed_first` instead)."""
        for observed in (*self.gates, *self.observers):
            observed.collected = observed.observer.collect(snapshot, observed.changes)
        for fed in self.feeds:
            fed.collected = fed.feed.collect(snapshot, fed.changes, fed.joins)

    def feed_first(self, snapshot: Snapshot) -> None:
        """For a light batch read on the event loop: collect and deliver the feeds, and only
        then let the observers read the snapshot, so that no observer's reads (the reply
        runner's, the scheduler's) come between a commit and its events reaching watchers."""
        for fed in self.feeds:
            fed.collected = fed.feed.collect(snapshot, fed.changes, fed.joins)
        self._deliver_feeds()
        for observed in self.observers:
            observed.collected = observed.observer.collect(snapshot, observed.changes)

    def deliver_gates(self) -> None:
        """Deliver the gates: before anything else of the batch is sent."""
        for observed in self.gates:
            observed.observer.deliver(observed.collected)

    def deliver(self) -> None:
        """Deliver the feeds (unless `feed_first` did), then the other observers: after the
        batch's query values."""
        self._deliver_feeds()
        for observed in self.observers:
            observed.observer.deliver(observed.collected)

    def _deliver_feeds(self) -> None:
        if not self.feeds_delivered:
            self.feeds_delivered = True
            for fed in self.feeds:
                fed.feed.deliver(fed.collected, fed.joins)


class Listeners:
    """Every feed and commit observer of a hub, and the feed joins waiting for a batch."""

    def __init__(self) -> None:
        self._gates: list[CommitObserver[Any]] = []
        self._observers: list[CommitObserver[Any]] = []
        self._feeds: list[Feed[Any]] = []
        self._waiting: list[FeedJoin] = []
        self._joining: list[FeedJoin] = []  # taken by the batch being run

    def add_observer(self, observer: CommitObserver[Any], gate: bool = False) -> None:
        """Give `observer` every batch of commits that touch its tables; a gate goes first."""
        (self._gates if gate else self._observers).append(observer)

    def add_feed(self, feed: Feed[Any]) -> None:
        """Give `feed` every batch of commits that touch its tables, and its joins."""
        self._feeds.append(feed)

    def join(self, join: FeedJoin) -> None:
        """Queue `join` for the next batch."""
        self._waiting.append(join)

    @property
    def joins_waiting(self) -> bool:
        """Whether a feed join waits for the next batch."""
        return bool(self._waiting)

    def watched_tables(self) -> list[frozenset[str]]:
        """The tables of every active feed and observer."""
        everyone: list[Feed[Any] | CommitObserver[Any]] = [
            *self._gates,
            *self._feeds,
            *self._observers,
        ]
        return [listener.tables for listener in everyone if listener.active]

    def feeds_touched(self, changes: list[ChangeSet]) -> bool:
        """Whether `changes` concern a feed."""
        return any(_touching(changes, feed.tables) for feed in self._feeds)

    def feed_remembered(self, changes: list[ChangeSet]) -> None:
        """Let every feed `changes` concern push their events from memory (Feed.deliver_remembered);
        those that cannot read them in the next batch, as usual."""
        for feed in self._feeds:
            if relevant := _touching(changes, feed.tables):
                feed.deliver_remembered(relevant)

    def gated(self, changes: list[ChangeSet]) -> bool:
        """Whether `changes` concern a gate (the streams it holds are judged again)."""
        return any(_touching(changes, gate.tables) for gate in self._gates)

    def take(self, changes: list[ChangeSet]) -> BatchListeners:
        """The feeds and observers that `changes` or a waiting join concern, for one batch."""
        joins, self._waiting = self._waiting, []
        self._joining = joins
        batch = BatchListeners()
        for gate in self._gates:
            if relevant := _touching(changes, gate.tables):
                batch.gates.append(_Observed(gate, relevant))
        for feed in self._feeds:
            relevant = _touching(changes, feed.tables)
            feed_joins = [j for j in joins if j.feed is feed]
            if relevant or feed_joins:
                batch.feeds.append(_Fed(feed, relevant, feed_joins))
        for observer in self._observers:
            if relevant := _touching(changes, observer.tables):
                batch.observers.append(_Observed(observer, relevant))
        return batch

    def batch_done(self) -> None:
        """The batch that took the joins has admitted them."""
        self._joining = []

    def fail_joins(self, reason: str) -> None:
        """Fail every join still waiting or being admitted with RuntimeError(`reason`)."""
        for join in (*self._waiting, *self._joining):
            if not join.ready.done():
                join.ready.set_exception(RuntimeError(reason))
        self._waiting = []
        self._joining = []


def _touching(changes: list[ChangeSet], tables: frozenset[str]) -> list[ChangeSet]:
    return [changeset for changeset in changes if changeset.touches(tables)]
