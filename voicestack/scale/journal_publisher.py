"""The primary's side of the thread journal (voicestack/scale/journal.py): a hub feed that reads
every new thread event once per batch, whoever watches its thread, and publishes it to JetStream
with its id and the id of its thread's event before it.

Publishes are fire-and-forget, in commit order, on the primary's own connection: a publish lost
while NATS is away leaves a hole that the next event's `prev` makes visible, so an edge never
trusts a run across it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from voicestack.agent.feed import encode_row_event
from voicestack.reactive.listeners import FeedJoin
from voicestack.scale.journal import (
    DEDUP_HEADER,
    EVENT_HEADER,
    KEEP_PER_THREAD,
    KEEP_S,
    PREV_HEADER,
    STREAM,
    SUBJECTS,
    JournalEvent,
    journal_subject,
)
from voicestack.store.changes import ChangeSet
from voicestack.store.readers import Snapshot

log = logging.getLogger(__name__)

_PREV_KEPT = 16384  # threads whose newest journalled event is remembered
_BACKLOG_BATCHES = 4096  # batches waiting to be published before new ones are dropped

Published = list[tuple[str, JournalEvent]]  # (subject, event)


def stream_config() -> StreamConfig:
    """The journal's JetStream stream: each thread's newest events, for an hour, on disk."""
    return StreamConfig(
        name=STREAM,
        subjects=[SUBJECTS],
        max_msgs_per_subject=KEEP_PER_THREAD,
        max_age=KEEP_S,
        storage=StorageType.FILE,
        duplicate_window=120.0,
    )


class JournalPublisher:
    """A hub Feed (voicestack/reactive/listeners.py) with no clients: each batch's new thread
    events go to the journal."""

    tables = frozenset({"thread_events"})

    def __init__(self, nc: Client, after: int) -> None:
        """`after`: the newest event id already committed when the publisher starts (the
        events after it are published)."""
        self._nc = nc
        self._last = after
        # Each thread's newest event so far: the `prev` of its next one.
        self._prev: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._backlog: asyncio.Queue[Published] = asyncio.Queue(_BACKLOG_BATCHES)
        self._pump: asyncio.Task[None] | None = None
        self._closed = False
        self.published = 0  # events handed to NATS

    @property
    def active(self) -> bool:
        """Always, until closed: the journal holds every thread, watched or not."""
        return not self._closed

    def start(self) -> None:
        """Begin publishing, on the running loop."""
        self._pump = asyncio.get_running_loop().create_task(
            self._publish(), name="voicestack-journal"
        )

    def collect(
        self, snapshot: Snapshot, changes: list[ChangeSet], joins: list[FeedJoin]
    ) -> Published:
        """The thread events committed since the last batch, each with its thread's event
        before it."""
        if self._closed:
            return []
        conn = snapshot.conn
        found: Published = []
        for event_id, thread_id, kind, data in conn.execute(
            "SELECT id, thread_id, kind, data FROM thread_events WHERE id > ? ORDER BY id",
            (self._last,),
        ):
            self._last = event_id
            subject = journal_subject(thread_id)
            if subject is None:
                continue
            prev = self._prev.pop(thread_id, None)
            if prev is None:
                prev = conn.execute(
                    "SELECT coalesce(max(id), 0) FROM thread_events WHERE thread_id = ? AND id < ?",
                    (thread_id, event_id),
                ).get
            self._prev[thread_id] = event_id
            if len(self._prev) > _PREV_KEPT:
                self._prev.popitem(last=False)
            event = encode_row_event(event_id, kind, data)
            found.append((subject, JournalEvent(event_id, prev, event)))
        return found

    def deliver(self, collected: Published, joins: list[FeedJoin]) -> None:
        """Queue the batch's events for NATS, in order; a backlog too long (NATS away for long)
        drops them, and the chain shows the hole."""
        if collected and not self._closed:
            with contextlib.suppress(asyncio.QueueFull):
                self._backlog.put_nowait(collected)

    async def _publish(self) -> None:
        while True:
            batch = await self._backlog.get()
            for subject, event in batch:
                headers = {
                    EVENT_HEADER: str(event.id),
                    PREV_HEADER: str(event.prev),
                    DEDUP_HEADER: str(event.id),
                }
                try:
                    await self._nc.publish(subject, event.event, headers=headers)
                    self.published += 1
                except (NatsError, OSError) as exc:
                    log.debug("journal: event %d not published: %s", event.id, exc)

    async def close(self) -> None:
        """Stop publishing (what is queued is dropped: the chain shows the hole)."""
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump


async def ensure_stream(nc: Client, newest: Callable[[], Awaitable[int]], warn: bool) -> bool:
    """Create (or update) the journal's stream; False (said in the log, if `warn`) when the
    server has no JetStream. A
    journal that holds events past `newest()`, the database's newest event, is of a database
    restored from an older backup: event ids will be reused, so it is emptied."""
    js = nc.jetstream(timeout=2.0)
    try:
        try:
            await js.add_stream(stream_config())
        except BadRequestError:  # it exists with other limits: take ours
            await js.update_stream(stream_config())
        info = await js.stream_info(STREAM)
        last_seq = info.state.last_seq
        with contextlib.suppress(NotFoundError):  # the last message may be gone already
            last = await js.get_msg(STREAM, seq=last_seq) if last_seq else None
            journalled = int((last.headers or {}).get(EVENT_HEADER, "0")) if last else 0
            if journalled > (database := await newest()):
                log.warning(
                    "the thread journal runs ahead of the database (event %d > %d): emptied",
                    journalled,
                    database,
                )
                await js.purge_stream(STREAM)
    except (NatsError, TimeoutError, ValueError) as exc:
        (log.warning if warn else log.debug)(
            "no thread journal (%s): clients resuming on an edge are caught up by the primary;"
            " start nats-server with -js to keep one",
            exc,
        )
        return False
    return True
