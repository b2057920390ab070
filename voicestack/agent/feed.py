"""The thread feed: every event of a thread (messages, deltas, tool calls, speech) over SSE.

Events are rows of `thread_events`, written in the same transaction as the change they announce,
so the feed is exactly as durable as the data. Live events are read once per hub batch and
encoded once, however many clients watch the thread; a client that joins (or rejoins with
Last-Event-ID) is caught up from the database inside the same snapshot, so nothing is missed
and nothing is sent twice. A feed stream ends at the commit that takes its thread away from the
viewer (the access guard watches `thread_members`).

Deflated feeds (a client that accepts `Content-Encoding: deflate`) of one thread share one
compressor, its Cohort: a batch's events are compressed once for all of them, as they are encoded
once for all the plain ones (voicestack/reactive/deflate.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from voicestack import jsoncodec
from voicestack.agent.membership import require_thread, thread_visible
from voicestack.agent.records import (
    MESSAGE_COLUMNS,
    TOOL_CALL_COLUMNS,
    EventRow,
    message_from_row,
    tool_call_from_row,
)
from voicestack.identity import Caller
from voicestack.reactive.access import AccessGuard, Viewer
from voicestack.reactive.channel import FeedChannel
from voicestack.reactive.deflate import Cohort, Opening, Segment, opening
from voicestack.reactive.fanout_writes import parallel, write_claimed
from voicestack.reactive.hub import Hub
from voicestack.reactive.listeners import FeedJoin
from voicestack.reactive.streams import Stream
from voicestack.reactive.wire import encode_event, http_chunk
from voicestack.store.changes import ChangeSet, changed_values, remembered_rows
from voicestack.store.db import ReadDB
from voicestack.store.readers import Snapshot
from voicestack.store.store import Store

Event = tuple[int, bytes]  # (event id, encoded SSE event)
# What decides who may see a thread, for the access guard. Not `threads`: replies touch it on
# every commit, and no commit there changes who may see one.
ACCESS_TABLES = frozenset({"thread_members"})


def threads_changed(db: ReadDB, changes: list[ChangeSet]) -> frozenset[str] | None:
    """The threads whose membership `changes` changed, the access guard's scopes (None: any,
    as when a member was removed: the row is gone). A new thread's first member concerns no
    open stream of another thread."""
    return changed_values(db, changes, "thread_members", "thread_id")


def encode_row_event(event_id: int, kind: str, data: str | bytes) -> bytes:
    """One feed event as SSE bytes; `data` is the stored JSON."""
    raw = data.encode() if isinstance(data, str) else data
    return encode_event(kind.encode(), event_id, raw)


def _unnumbered(kind: str, data: Any) -> bytes:
    # Snapshot events carry no id: a client cut off half-way through a snapshot then reconnects
    # without Last-Event-ID and gets a whole snapshot again, never a partial one it thinks whole.
    return encode_event(kind.encode(), None, jsoncodec.dumps(data))


@dataclass
class _Collected:
    last_id: int
    events: dict[str, list[Event]] = field(default_factory=dict)
    # Each join's catch-up (compressed for a deflated feed) and the cursor live events follow.
    catch_ups: list[tuple[bytes | Opening, int]] = field(default_factory=list)


@dataclass(eq=False)
class _Watchers:
    """The outboxes of one thread: plain ones, and deflated ones with their shared compressor."""

    plain: set[FeedChannel] = field(default_factory=set)
    deflated: set[FeedChannel] = field(default_factory=set)
    cohort: Cohort | None = None


class ThreadFeed:
    """A hub Feed of thread events: routes each new event to the outboxes of its thread."""

    tables = frozenset({"thread_events"})

    def __init__(self) -> None:
        self._outboxes: dict[str, _Watchers] = {}
        self._last_id: int | None = None

    @property
    def active(self) -> bool:
        """True while some client watches a thread."""
        return bool(self._outboxes)

    @property
    def watched_threads(self) -> int:
        """How many threads have at least one live feed."""
        return len(self._outboxes)

    def leave(self, thread_id: str, outbox: FeedChannel) -> None:
        """Stop feeding `outbox`."""
        watchers = self._outboxes.get(thread_id)
        if watchers is not None:
            watchers.plain.discard(outbox)
            watchers.deflated.discard(outbox)
            if not watchers.deflated:
                watchers.cohort = None  # its compressor's memory goes with its last member
            if not watchers.plain and not watchers.deflated:
                del self._outboxes[thread_id]
        if not self._outboxes:
            # Batches are skipped while nobody watches: forget the position, so the next batch
            # starts from its own snapshot instead of replaying what nobody asked for.
            self._last_id = None

    def collect(
        self, snapshot: Snapshot, changes: list[ChangeSet], joins: list[FeedJoin]
    ) -> _Collected:
        """Read the events committed since the last batch, and each join's catch-up."""
        conn = snapshot.conn
        newest: int = conn.execute("SELECT coalesce(max(id), 0) FROM thread_events").get
        collected = _Collected(newest)
        last = self._last_id if self._last_id is not None else newest
        if newest > last and self._outboxes:
            watched = self._outboxes.keys()
            for event_id, thread_id, kind, data in conn.execute(
                "SELECT id, thread_id, kind, data FROM thread_events"
                " WHERE id > ? AND id <= ? ORDER BY id",
                (last, newest),
            ):
                if thread_id in watched:
                    collected.events.setdefault(thread_id, []).append(
                        (event_id, encode_row_event(event_id, kind, data))
                    )
        for join in joins:
            catch_up, cursor = self._catch_up(snapshot, join.key, join.cursor, newest)
            # Compressed here, on the hub's reader thread: a catch-up may be a whole thread.
            compressed = opening(catch_up) if join.outbox.deflated is not None else catch_up
            collected.catch_ups.append((compressed, cursor))
        return collected

    def deliver_remembered(self, changes: list[ChangeSet]) -> bool:
        """Send the events `changes` (the commits right after the last batch's) inserted, from
        the rows their writer handed over, without a read: False, and nothing sent, when a
        commit's are not all known that way (the next batch reads them)."""
        if self._last_id is None:
            return False
        rows: dict[int, EventRow] | None = remembered_rows(changes, "thread_events")
        if rows is None:
            return False
        if not rows:
            return True
        if min(rows) <= self._last_id:
            return False  # not the events after the last batch's (never expected)
        collected = _Collected(max(rows))
        watched = self._outboxes.keys()
        for event_id in sorted(rows):
            row = rows[event_id]
            if row.thread_id in watched:
                collected.events.setdefault(row.thread_id, []).append(
                    (event_id, encode_row_event(event_id, row.kind, row.data))
                )
        self.deliver(collected, [])
        return True

    def catch_up(self, snapshot: Snapshot, thread_id: str, cursor: int | None) -> tuple[bytes, int]:
        """What a client at `cursor` (None: none yet) is missing of the thread in `snapshot`,
        as SSE bytes, and the event id live events continue after."""
        newest: int = snapshot.conn.execute("SELECT coalesce(max(id), 0) FROM thread_events").get
        return self._catch_up(snapshot, thread_id, cursor, newest)

    def _catch_up(
        self, snapshot: Snapshot, thread_id: str, cursor: int | None, newest: int
    ) -> tuple[bytes, int]:
        conn = snapshot.conn
        if cursor is not None:
            rows = conn.execute(
                "SELECT id, kind, data FROM thread_events"
                " WHERE thread_id = ? AND id > ? AND id <= ? ORDER BY id",
                (thread_id, cursor, newest),
            )
            return b"".join(encode_row_event(i, k, d) for i, k, d in rows), newest
        db = snapshot.db()
        parts = [
            _unnumbered("message", message_from_row(db, row))
            for row in db.all(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? ORDER BY position",
                (thread_id,),
            )
        ]
        parts += [
            _unnumbered("tool_call", tool_call_from_row(row))
            for row in db.all(
                f"SELECT {TOOL_CALL_COLUMNS} FROM tool_calls"
                " WHERE thread_id = ? ORDER BY created_at, id",
                (thread_id,),
            )
        ]
        # The last event of a snapshot carries the id live events continue from.
        parts.append(encode_event(b"ready", newest, b'{"cursor":%d}' % newest))
        return b"".join(parts), newest

    def deliver(self, collected: _Collected, joins: list[FeedJoin]) -> None:
        """Send new events to the outboxes of their threads, then admit the joins.

        A thread's events of one batch become one HTTP chunk, framed once and written straight
        to every idle subscriber of the thread; a busy or paused one gets them queued instead.
        The deflated subscribers get the same events compressed once, likewise.
        """
        now = asyncio.get_running_loop().time()
        for thread_id, events in collected.events.items():
            watchers = self._outboxes.get(thread_id)
            if watchers is None:
                continue
            if watchers.plain:
                send_plain(watchers.plain, events, now)
            if watchers.cohort is not None and watchers.deflated:
                data = b"".join(event for _, event in events)
                segment = watchers.cohort.segment(data, events[-1][0])
                send_deflated(watchers.deflated, segment, now)
        self._last_id = collected.last_id
        for join, (catch_up, cursor) in zip(joins, collected.catch_ups, strict=True):
            if join.ready.done():
                continue  # the client left while it waited
            outbox = join.outbox
            watchers = self._outboxes.setdefault(join.key, _Watchers())
            if isinstance(catch_up, Opening):
                if watchers.cohort is None:
                    watchers.cohort = Cohort()
                outbox.open_deflated(catch_up, cursor, watchers.cohort)
                watchers.deflated.add(outbox)
            else:
                outbox.preload(catch_up, cursor)
                watchers.plain.add(outbox)
            join.ready.set_result(None)


def send_plain(outboxes: set[FeedChannel], events: list[Event], now: float) -> None:
    """Send one batch of encoded events to plain feeds: one chunk, framed once and written
    straight to every idle subscriber (many at once: write_claimed); a busy or paused one gets
    them queued."""
    first, last = events[0][0], events[-1][0]
    frame = http_chunk(b"".join(event for _, event in events))
    rest = list(outboxes)
    if parallel(len(rest)):
        rest = write_claimed(rest, frame, now, first, last)
    for outbox in rest:
        if outbox.cursor < first and not outbox.has_pending() and outbox.writable_now():
            outbox.put_frame(frame, now)
            outbox.cursor = last
        else:
            for event_id, event in events:
                outbox.append(event_id, event)


def send_deflated(outboxes: set[FeedChannel], segment: Segment, now: float) -> None:
    """Send one segment of a cohort to its deflated feeds, as send_plain sends a batch: written
    straight to every idle subscriber, queued for a busy or paused one."""
    rest = list(outboxes)
    if parallel(len(rest)):
        rest = write_claimed(rest, segment.frame, now, None, segment.last_id)
    for outbox in rest:
        if not outbox.has_pending() and outbox.writable_now():
            outbox.put_frame(segment.frame, now)
            outbox.cursor = segment.last_id
        else:
            outbox.queue_segment(segment)


async def open_thread_feed(
    hub: Hub,
    guard: AccessGuard,
    store: Store,
    feed: ThreadFeed,
    thread_id: str,
    viewer: Viewer | None,
    cursor: int | None,
    deflate: bool = False,
) -> Stream:
    """A stream of the thread's events after event `cursor` (None: a snapshot first), ended
    when the viewer's token is revoked or they may no longer see the thread; raises
    `thread_not_found` when they cannot see it now. `deflate`: its bytes are a zlib stream
    (`Content-Encoding: deflate`), else plain SSE."""
    user = viewer.caller if viewer is not None else None
    outbox = FeedChannel(deflate=deflate)
    hub.track(outbox)
    # Guarded before the check reads: a member who leaves in between is still cut off.
    guard.watch(outbox, viewer, lambda db: thread_visible(db, thread_id, user), thread_id)

    def release() -> None:
        feed.leave(thread_id, outbox)
        hub.close_channel(outbox)

    def visible_at(snapshot: Snapshot) -> int:
        require_thread(snapshot.db(), thread_id, user)
        return snapshot.version

    try:
        guard.checked(outbox, await store.read(visible_at))
        await hub.join_feed(feed, thread_id, outbox, cursor)
    except BaseException:
        release()
        raise
    return Stream(outbox, release)


async def read_catch_up(
    store: Store, feed: ThreadFeed, thread_id: str, user: Caller | None, cursor: int | None
) -> tuple[bytes, int]:
    """ThreadFeed.catch_up in a fresh snapshot, for a viewer who may see the thread (else
    `thread_not_found`)."""

    def read(snapshot: Snapshot) -> tuple[bytes, int]:
        require_thread(snapshot.db(), thread_id, user)
        return feed.catch_up(snapshot, thread_id, cursor)

    result: tuple[bytes, int] = await store.read(read)
    return result
