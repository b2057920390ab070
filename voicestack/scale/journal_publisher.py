"""The primary's side of the thread journal (voicestack/scale/journal.py): every new thread
event, whoever watches its thread, published to JetStream with its id and the id of its thread's
event before it. The hub only says when thread events were committed; they are read and
published by a task of the journal's own, off the path of the batch's deliveries.

Nothing is published until this process has found the journal's stream on the NATS server it
reaches, and found that the stream's newest event is one this database holds, byte for byte: a
journal of another timeline (a database restored from an older backup reuses event ids) is
emptied first. Publishes are then fire-and-forget, in commit order, on the primary's own
connection: a publish lost while NATS is away leaves a hole that the next event's `prev` makes
visible, so an edge never trusts a run across it. While the journal is not ready (NATS down, no
JetStream) nothing is read or published: it begins again at the newest event when it is ready,
and what was committed meanwhile is a hole too.

One primary at a time: an old primary still running against an older copy of the database would
publish its own timeline beside the new one's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import logging

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.api import RawStreamMsg, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from voicestack.agent.feed import encode_row_event
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
from voicestack.store.store import Store

log = logging.getLogger(__name__)

_PREV_KEPT = 16384  # threads whose newest journalled event is remembered
_RETRY_S = 5.0  # between attempts to find (or make) the journal's stream
_MAX_BYTES = 1 << 30

Published = list[tuple[str, JournalEvent]]  # (subject, event)


def stream_config() -> StreamConfig:
    """The journal's JetStream stream: each thread's newest events, for an hour, on disk."""
    return StreamConfig(
        name=STREAM,
        subjects=[SUBJECTS],
        max_msgs_per_subject=KEEP_PER_THREAD,
        max_age=KEEP_S,
        max_bytes=_MAX_BYTES,
        storage=StorageType.FILE,
        duplicate_window=120.0,
    )


def message_id(event: JournalEvent) -> str:
    """The event's Nats-Msg-Id: the same for every primary process publishing it (JetStream
    keeps one), and another for another timeline's event of the same id."""
    digest = hashlib.blake2b(event.event, digest_size=8).hexdigest()
    return f"{event.id}.{event.prev}.{digest}"


def _holds(snapshot: Snapshot, journalled: RawStreamMsg) -> bool:
    """Whether the database holds the journalled event, in its thread, byte for byte."""
    try:
        event_id = int((journalled.headers or {})[EVENT_HEADER])
    except (KeyError, ValueError):
        return False
    row = snapshot.db().one(
        "SELECT thread_id, kind, data FROM thread_events WHERE id = ?", (event_id,)
    )
    if row is None or journalled.subject != journal_subject(str(row["thread_id"])):
        return False
    return encode_row_event(event_id, str(row["kind"]), row["data"]) == journalled.data


def _newest_event(snapshot: Snapshot) -> int:
    newest: int = snapshot.conn.execute("SELECT coalesce(max(id), 0) FROM thread_events").get
    return newest


class JournalPublisher:
    """A hub CommitObserver (voicestack/store/observer.py) of thread events: after each batch
    that committed some, its task reads and publishes them, once the journal's stream is
    ready."""

    tables = frozenset({"thread_events"})

    def __init__(self, nc: Client, store: Store) -> None:
        self._nc = nc
        self._store = store
        self._last = 0  # the newest event read
        # Where to begin again once the journal is ready (nothing before it is published).
        self._begin_at: int | None = None
        # Each thread's newest event so far: the `prev` of its next one.
        self._prev: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._committed = asyncio.Event()  # thread events were committed since the last read
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._warned = False
        self._closed = False
        self._reconnects = 0
        self.ready = False  # the stream is there, and holds this database's timeline

    @property
    def active(self) -> bool:
        """While the journal is ready: it holds every thread, watched or not."""
        return self.ready and not self._closed

    def start(self) -> None:
        """Find the stream, then publish, on the running loop."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._keep_ready(), name="voicestack-journal-stream"),
            loop.create_task(self._publish(), name="voicestack-journal"),
        ]

    def reconnected(self) -> None:
        """NATS came back, perhaps another server without the stream: look again now. What is
        committed meanwhile is not published: a hole, which the chain shows."""
        self.ready = False
        self._reconnects += 1
        self._wake.set()

    def collect(self, snapshot: Snapshot, changes: list[ChangeSet]) -> None:
        """Nothing: the events are read by the journal's task, off the batch's path."""

    def deliver(self, collected: None) -> None:
        """Thread events were committed: wake the journal's task."""
        if self.active:
            self._committed.set()

    def _read(self, snapshot: Snapshot, begin_at: int | None) -> Published:
        """The thread events committed after the last one read (after `begin_at`, given), each
        with its thread's event before it."""
        if begin_at is not None:
            self._last = begin_at
            self._prev.clear()  # a `prev` from before the hole would bridge it
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

    async def _publish(self) -> None:
        while True:
            await self._committed.wait()
            self._committed.clear()
            if not self.ready:
                continue  # not read, not published: a hole the chain shows
            begin_at, self._begin_at = self._begin_at, None
            try:
                batch = await self._store.read(functools.partial(self._read, begin_at=begin_at))
                for subject, event in batch:
                    headers = {
                        EVENT_HEADER: str(event.id),
                        PREV_HEADER: str(event.prev),
                        DEDUP_HEADER: message_id(event),
                    }
                    await self._nc.publish(subject, event.event, headers=headers)
            except (NatsError, OSError) as exc:
                log.debug("journal: a batch was not published: %s", exc)
            except Exception:
                log.exception("journal: a batch was not published")

    async def _keep_ready(self) -> None:
        while True:
            self._wake.clear()  # before the attempt: a reconnection during it tries again now
            if not self.ready and self._nc.is_connected:
                try:
                    reconnects = self._reconnects
                    # (a reconnection meanwhile may have reached a server without the stream)
                    if await self._ensure_stream() and reconnects == self._reconnects:
                        self._begin_at = await self._store.read(_newest_event)
                        self.ready = True
                        self._committed.set()
                        log.info("thread journal: publishing to JetStream stream %s", STREAM)
                except Exception:
                    log.exception("journal: checking its stream failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _RETRY_S)

    async def _ensure_stream(self) -> bool:
        """Create (or update) the journal's stream, emptied if it holds another timeline; False
        (said in the log the first time) when the server has no JetStream."""
        js = self._nc.jetstream(timeout=2.0)
        try:
            try:
                await js.add_stream(stream_config())
            except BadRequestError:  # it exists with other limits: take ours
                await js.update_stream(stream_config())
            info = await js.stream_info(STREAM)
            last = None
            if info.state.last_seq:
                with contextlib.suppress(NotFoundError):  # gone meanwhile (its age, say)
                    last = await js.get_msg(STREAM, seq=info.state.last_seq)
            if last is not None and not await self._store.read(lambda s: _holds(s, last)):
                log.warning(
                    "the thread journal holds events this database does not (it was restored"
                    " from an older copy?): emptied"
                )
                await js.purge_stream(STREAM)
        except (NatsError, TimeoutError) as exc:
            (log.debug if self._warned else log.warning)(
                "no thread journal (%s): clients resuming on an edge are caught up by the"
                " primary; start nats-server with -js to keep one",
                exc,
            )
            self._warned = True
            return False
        return True

    async def close(self) -> None:
        """Stop publishing (what is queued is dropped: the chain shows the hole)."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
