"""The thread feed: every event of a thread (messages, deltas, tool calls, speech) over SSE.

Events are rows of `thread_events`, written in the same transaction as the change they announce,
so the feed is exactly as durable as the data. Live events are read once per hub batch and
encoded once, however many clients watch the thread; a client that joins (or rejoins with
Last-Event-ID) is caught up from the database inside the same snapshot, so nothing is missed
and nothing is sent twice. A feed stream ends at the commit that takes its thread away from the
viewer (the access guard watches `thread_members`).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from voicestack import jsoncodec
from voicestack.agent.membership import require_thread, thread_visible
from voicestack.agent.records import (
    MESSAGE_COLUMNS,
    TOOL_CALL_COLUMNS,
    message_from_row,
    tool_call_from_row,
)
from voicestack.reactive.access import AccessGuard, Viewer
from voicestack.reactive.channel import FeedChannel
from voicestack.reactive.hub import Hub
from voicestack.reactive.listeners import FeedJoin
from voicestack.reactive.streams import Stream
from voicestack.reactive.wire import encode_event, http_chunk
from voicestack.store.changes import ChangeSet
from voicestack.store.readers import Snapshot
from voicestack.store.store import Store

Event = tuple[int, bytes]  # (event id, encoded SSE event)
# What decides who may see a thread, for the access guard. Not `threads`: replies touch it on
# every commit, and no commit there changes who may see one.
ACCESS_TABLES = frozenset({"thread_members"})


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
    catch_ups: list[tuple[bytes, int]] = field(default_factory=list)


class ThreadFeed:
    """A hub Feed of thread events: routes each new event to the outboxes of its thread."""

    tables = frozenset({"thread_events"})

    def __init__(self) -> None:
        self._outboxes: dict[str, set[FeedChannel]] = defaultdict(set)
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
        outboxes = self._outboxes.get(thread_id)
        if outboxes is not None:
            outboxes.discard(outbox)
            if not outboxes:
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
            collected.catch_ups.append(self._catch_up(snapshot, join.key, join.cursor, newest))
        return collected

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
        """
        now = asyncio.get_running_loop().time()
        for thread_id, events in collected.events.items():
            outboxes = self._outboxes.get(thread_id)
            if not outboxes:
                continue
            first, last = events[0][0], events[-1][0]
            frame: bytes | None = None
            for outbox in list(outboxes):
                if outbox.cursor < first and not outbox.has_pending():
                    if frame is None:
                        frame = http_chunk(b"".join(event for _, event in events))
                    if outbox.write_direct(frame, now):
                        outbox.cursor = last
                        continue
                for event_id, event in events:
                    outbox.append(event_id, event)
        self._last_id = collected.last_id
        for join, (catch_up, cursor) in zip(joins, collected.catch_ups, strict=True):
            if join.ready.done():
                continue  # the client left while it waited
            outbox = join.outbox
            outbox.preload(catch_up, cursor)
            self._outboxes[join.key].add(outbox)
            join.ready.set_result(None)


async def open_thread_feed(
    hub: Hub,
    guard: AccessGuard,
    store: Store,
    feed: ThreadFeed,
    thread_id: str,
    viewer: Viewer | None,
    cursor: int | None,
) -> Stream:
    """A stream of the thread's events after event `cursor` (None: a snapshot first), ended
    when the viewer's token is revoked or they may no longer see the thread; raises
    `thread_not_found` when they cannot see it now."""
    user = viewer.caller if viewer is not None else None
    outbox = FeedChannel()
    hub.track(outbox)
    # Guarded before the check reads: a member who leaves in between is still cut off.
    guard.watch(outbox, viewer, lambda db: thread_visible(db, thread_id, user))

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
