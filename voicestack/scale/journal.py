"""The thread journal: every thread event, kept in a JetStream stream, so that an edge can catch
a resuming client up without asking the primary to read its database (DESIGN §12).

The primary publishes each thread event once, whoever watches the thread
(voicestack/scale/journal_publisher.py), to `voicestack.feed.<thread>`, with its event id and
the id of the thread's event before it. JetStream's sequence numbers are not event ids, and an
event can be missing from the stream: a publish lost while NATS reconnected, events committed
while no primary ran, the cap per thread. So an edge trusts only a run it can prove whole: it
starts from the thread's newest event when its stream opened (the primary says which) and
follows each event's `prev` back, as far as the chain holds. Everything the run covers, the
edge serves from memory; a client whose cursor lies before it is caught up by the primary, as
before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from voicestack.scale import subjects

log = logging.getLogger(__name__)

STREAM = "VOICESTACK_FEED"
SUBJECTS = "voicestack.feed.>"
EVENT_HEADER = "Voicestack-Event"
PREV_HEADER = "Voicestack-Prev"
# JetStream drops a repeated Nats-Msg-Id: several primary processes on one file publish alike.
DEDUP_HEADER = "Nats-Msg-Id"
KEEP_PER_THREAD = 1000  # the newest events of each thread the journal keeps
KEEP_S = 3600.0  # and for how long
READ_TIMEOUT_S = 2.0


def journal_subject(thread_id: str) -> str | None:
    """Where the thread's events are journalled; None for an id that is no subject token."""
    if not subjects.is_token(thread_id):
        return None
    return f"voicestack.feed.{thread_id}"


@dataclass(frozen=True, slots=True)
class JournalEvent:
    """One journalled thread event: its id, the thread's event before it (0: none), and its SSE
    bytes exactly as the thread feed sends them."""

    id: int
    prev: int
    event: bytes


def whole_run(events: list[JournalEvent], newest: int) -> tuple[int, list[JournalEvent]] | None:
    """The longest run of `events` that ends at event `newest` and in which each event names the
    one before it: (the id the run follows, the run oldest first). The thread has no event
    between those two. None when `newest` is not among them."""
    by_id = {event.id: event for event in events}
    run: list[JournalEvent] = []
    at = newest
    while (event := by_id.get(at)) is not None and event.prev < at:
        run.append(event)
        at = event.prev
    if not run:
        return None
    run.reverse()
    return at, run


async def read_journal(nc: Client, thread_id: str) -> list[JournalEvent] | None:
    """Every event the journal holds of the thread (at most KEEP_PER_THREAD), in the order they
    were journalled; None when there is no journal (NATS without JetStream, say) or it failed."""
    subject = journal_subject(thread_id)
    if subject is None:
        return None
    js = nc.jetstream(timeout=READ_TIMEOUT_S)
    config = ConsumerConfig(
        name=f"replay-{uuid.uuid4().hex}",
        filter_subject=subject,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=10.0,
        mem_storage=True,
    )
    assert config.name is not None
    try:
        info = await js.add_consumer(STREAM, config)
    except (NatsError, TimeoutError) as exc:
        log.debug("the journal of %s could not be read: %s", thread_id, exc)
        return None
    try:
        pending = info.num_pending or 0
        if pending == 0:
            return []
        reader = await js.pull_subscribe_bind(config.name, stream=STREAM)
        try:
            msgs = await reader.fetch(batch=pending, timeout=READ_TIMEOUT_S)
        finally:
            await reader.unsubscribe()
    except (NatsError, TimeoutError) as exc:
        log.debug("the journal of %s could not be read: %s", thread_id, exc)
        return None
    finally:
        # The server would drop the consumer after inactive_threshold; this spares it the wait.
        forgetting = asyncio.get_running_loop().create_task(_forget(nc, config.name))
        _forgetting.add(forgetting)
        forgetting.add_done_callback(_forgetting.discard)
    events = []
    for msg in msgs:
        headers = msg.headers or {}
        try:
            events.append(
                JournalEvent(int(headers[EVENT_HEADER]), int(headers[PREV_HEADER]), msg.data)
            )
        except (KeyError, ValueError):
            continue
    return events


_forgetting: set[asyncio.Task[None]] = set()


async def _forget(nc: Client, consumer: str) -> None:
    with contextlib.suppress(NatsError, TimeoutError):
        await nc.jetstream().delete_consumer(STREAM, consumer)
