"""A Channel is one SSE connection's outbox, filled by the hub and drained by the connection.

It buffers only the newest value per subscription, so a slow client skips straight to the latest
state instead of queueing history, and the hub never waits on a client: pushing is a dict store
and, at most, waking the connection's one writer coroutine.

An outbox can be held while the access guard re-checks whether its caller may still see it:
what was pending before the hold (older commits) is still sent, what comes after is kept aside
until `resume`, and dropped unsent if the stream is closed instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from voicestack import jsoncodec
from voicestack.reactive.deflate import EMPTY_BLOCK, Cohort, Deflated, Opening, Segment
from voicestack.reactive.fanout_writes import plain_socket
from voicestack.reactive.payloads import ErrorPayload, Payload
from voicestack.reactive.wire import END_OF_CHUNKS, PING, encode_event, http_chunk


class FlowControl(Protocol):
    """The connection's back-pressure flag (uvicorn's FlowControl)."""

    @property
    def write_paused(self) -> bool:
        """True while the transport's write buffer is over its high-water mark."""
        ...

    async def drain(self) -> None:
        """Wait until writing is no longer paused (or the connection is lost)."""
        ...


class Outbox:
    """What an SSE connection drains: the hub fills it, the connection's writer empties it."""

    # The Content-Encoding of the bytes it hands out, and its keep-alive in that encoding.
    content_encoding: bytes | None = None
    ping_bytes = PING

    def __init__(self) -> None:
        self.closed = False
        self.ended_by: str | None = None  # why it was closed, when not by its own connection
        self.held = False
        self.last_write = 0.0
        self.sending_since: float | None = None
        # Drops the connection at once, pending bytes and all; set by whoever drains the outbox.
        self.abort: Callable[[], object] | None = None
        self._ping = False
        self._finished = False
        self._waiter: asyncio.Future[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._flow: FlowControl | None = None
        self._socket = -1  # its plain socket's file descriptor, for raw fan-out writes
        self._detached = False  # drained by short pump tasks, not by a connection coroutine
        self._pump: asyncio.Task[None] | None = None

    def attach(self, transport: asyncio.Transport, flow: FlowControl) -> None:
        """Allow direct writes of pre-framed chunks to this connection (response started)."""
        self._transport = transport
        self._flow = flow
        self._socket = plain_socket(transport)

    def detach(self) -> None:
        """Drain this outbox without a coroutine of its connection's own (attached first).

        An idle detached outbox costs no task: events go out as direct writes, and only what
        cannot (back-pressure, a hold, a catch-up) starts a short pump task that writes what is
        pending and ends. Once closed and drained, the pump ends the chunked response and
        closes the connection; whoever detached it learns of the end from the connection.
        """
        assert self._transport is not None, "attach() first"
        self._detached = True
        if self._has_pending() or self._ping or self.closed:
            self._start_pump()

    def write_direct(self, frame: bytes, now: float) -> bool:
        """Write `frame` now if the connection is idle and keeping up; False means push instead.

        Idle: the writer (coroutine or pump) has nothing pending, so nothing it sends can be
        reordered with this write. Keeping up: the transport is not paused for back-pressure.
        """
        if not self.writable_now():
            return False
        self.put_frame(frame, now)
        return True

    def writable_now(self) -> bool:
        """True when a frame may be written straight to the connection now (write_direct)."""
        transport = self._transport
        flow = self._flow
        return not (
            transport is None
            or flow is None
            or not self._idle()
            or self.closed
            or self.held
            or self._ping
            or flow.write_paused
            or transport.is_closing()
        )

    def put_frame(self, frame: bytes, now: float) -> None:
        """Write `frame` through the transport; only when writable_now()."""
        assert self._transport is not None
        self._transport.write(frame)
        self.last_write = now

    def ping(self) -> None:
        """Send a keep-alive comment unless something else is about to be sent anyway."""
        if self.closed:
            return
        if self._detached and self.write_direct(
            http_chunk(self.ping_bytes), asyncio.get_running_loop().time()
        ):
            return
        self._ping = True
        self._wake()

    def close(self, reason: str | None = None) -> None:
        """End the stream after what is pending has been sent; what is held is never sent.

        `reason` ("token_revoked", "access_removed") is kept as `ended_by`, the first one given.
        """
        if not self.closed:
            self.ended_by = reason
        self.closed = True
        self._wake()

    def hold(self) -> None:
        """Keep everything pushed from now on unsent until `resume`; `close` drops it."""
        if not self.closed:
            self.held = True

    def resume(self) -> None:
        """Send what was held, after what was pending, and stop holding."""
        if self.held and not self.closed:
            self.held = False
            self._release_held()
            self._wake()

    def _release_held(self) -> None:
        raise NotImplementedError

    def _idle(self) -> bool:
        if self._detached:
            return self._pump is None
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif self._detached:
            self._start_pump()

    def _start_pump(self) -> None:
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._drain_detached())

    async def _drain_detached(self) -> None:
        transport, flow = self._transport, self._flow
        assert transport is not None
        assert flow is not None
        loop = asyncio.get_running_loop()
        try:
            while not transport.is_closing():
                if flow.write_paused:
                    self.sending_since = loop.time()
                    await flow.drain()
                    self.sending_since = None
                elif self._has_pending() or self._ping:
                    self._ping = False
                    chunk = self._take() if self._has_pending() else self.ping_bytes
                    if chunk:  # an empty chunk would end the response
                        transport.write(http_chunk(chunk))
                        self.last_write = loop.time()
                elif self.closed:
                    last = self._last_chunk()
                    transport.write((http_chunk(last) if last else b"") + END_OF_CHUNKS)
                    transport.close()
                    return
                else:
                    return  # drained: the next push starts another pump
        finally:
            self._pump = None

    def _has_pending(self) -> bool:
        raise NotImplementedError

    def _take(self) -> bytes:
        raise NotImplementedError

    def _last_chunk(self) -> bytes | None:
        """What ends the stream once it is closed and drained, if anything; asked once."""
        return None

    async def next_chunk(self) -> bytes | None:
        """Wait for something to send and return it as bytes (a keep-alive when pinged); once
        closed and drained, the stream's last bytes if it has any, then None."""
        while not self._has_pending() and not self._ping:
            if self.closed:
                if self._finished:
                    return None
                self._finished = True
                return self._last_chunk()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._ping = False
        return self._take() if self._has_pending() else self.ping_bytes


class Channel(Outbox):
    """The outbox of a watch stream: one subscription (`multi=False`) or several by id.

    Only the newest value per subscription is kept: a slow client skips to the latest state.
    """

    def __init__(self, multi: bool) -> None:
        super().__init__()
        self.multi = multi
        self._pending: dict[str | None, Payload | ErrorPayload] = {}
        self._held: dict[str | None, Payload | ErrorPayload] = {}

    def has_pending(self) -> bool:
        """Whether something waits to be sent by the writer coroutine."""
        return bool(self._pending)

    def push(self, sub_id: str | None, payload: Payload | ErrorPayload) -> None:
        """Make `payload` the next thing sent for `sub_id`, replacing an unsent older one."""
        if self.closed:
            return
        if self.held:
            self._held[sub_id] = payload
            return
        self._pending[sub_id] = payload
        self._wake()

    def _release_held(self) -> None:
        self._pending.update(self._held)
        self._held = {}

    def _has_pending(self) -> bool:
        return bool(self._pending)

    def _take(self) -> bytes:
        pending, self._pending = self._pending, {}
        if not self.multi:
            (payload,) = pending.values()
            if isinstance(payload, Payload):
                return payload.single_event()
            return encode_event(b"error", payload.version, payload.data(None))
        # Values skipped by a slow client were superseded, and the ones still pending are all
        # valid at the newest version among them, so they go out as one snapshot at that version.
        version = max(p.version for p in pending.values())
        parts = []
        for sub_id, payload in pending.items():
            if isinstance(payload, Payload):
                data = b'{"id":%s,"value":%s,"version":%d}' % (
                    jsoncodec.dumps(sub_id),
                    payload.value_json,
                    version,
                )
                parts.append(encode_event(b"value", version, data))
            else:
                parts.append(encode_event(b"error", version, payload.data(sub_id)))
        return b"".join(parts)


class FeedChannel(Outbox):
    """The outbox of an append-only feed: every event is sent, in order, none skipped.

    The buffer is bounded: a client that falls `max_buffer_bytes` behind is disconnected, and
    its EventSource reconnects with Last-Event-ID and catches up from the database instead.

    A deflated feed (voicestack/reactive/deflate.py) is sent its opening, then its cohort's
    segments, instead of events: every one of them, in order, since each decodes only after the
    ones before it. Its keep-alive is an empty deflate block, and a graceful end closes the zlib
    stream; a stream cut for falling behind just stops, as a plain one does.
    """

    def __init__(self, max_buffer_bytes: int = 4 * 1024 * 1024, deflate: bool = False) -> None:
        super().__init__()
        self.cursor = 0
        # Set on every feed, so that both kinds keep one attribute layout: the fan-out loop
        # reads each subscriber's attributes (a layout of their own made it 15-40% slower).
        self.deflated = Deflated() if deflate else None
        self.content_encoding = b"deflate" if deflate else None
        self.ping_bytes = EMPTY_BLOCK if deflate else PING
        # A deflated stream starts with its zlib header, before anything is held back, so that
        # a keep-alive (an empty deflate block) is never the first thing it sends.
        self._events: list[bytes] = [Deflated.header] if deflate else []
        self._held: list[bytes] = []
        self._size = 0
        self._max = max_buffer_bytes
        self._cut = False

    def preload(self, events: bytes, cursor: int) -> None:
        """Queue a catch-up (any size) and move the cursor to where live events continue."""
        if self.closed:
            return
        if events:
            (self._held if self.held else self._events).append(events)
        self.cursor = max(self.cursor, cursor)
        self._wake()

    def open_deflated(self, opening: Opening, cursor: int, cohort: Cohort) -> None:
        """Queue a deflated feed's opening (its catch-up, compressed on its own) and join
        `cohort`, whose segments follow; live events continue after `cursor`."""
        assert self.deflated is not None, "not a deflated feed"
        if self.closed:
            return
        self.deflated.join(opening, cohort)
        self.preload(opening.body, cursor)

    def append(self, event_id: int, event: bytes) -> None:
        """Queue one encoded event; events at or before the cursor were already sent."""
        if self.closed or event_id <= self.cursor:
            return
        self.cursor = event_id
        self._queue(event)

    def claim_socket(self, after: int | None, last: int, now: float) -> int:
        """FrameTarget.claim_socket: the plain socket, when the feed is idle and keeping up
        (writable_now), nothing waits to be sent, its transport holds nothing unsent and, unless
        `after` is None, its cursor is before event `after`; the cursor then moves to `last`."""
        transport = self._transport
        if (
            self._socket < 0
            or (after is not None and self.cursor >= after)
            or self._events
            or not self.writable_now()
            or transport is None
            or transport.get_write_buffer_size()
        ):
            return -1
        self.cursor = last
        self.last_write = now
        return self._socket

    def note(self, event: bytes) -> None:
        """Queue an event that is not part of the feed (it has no id), in order with the rest."""
        if not self.closed:
            self._queue(event)

    def queue_segment(self, segment: Segment) -> None:
        """Queue a deflated feed's next segment of its cohort (every one, in order: the decoder
        needs them all); the thread feed writes it directly instead when the feed is idle."""
        if self.closed:
            return
        self.cursor = segment.last_id
        self._queue(segment.body)

    def hold(self) -> None:
        """Keep everything pushed from now on unsent until `resume`; `close` drops it."""
        if self.deflated is not None and not self.held and not self.closed:
            self.deflated.hold()
        super().hold()

    def close(self, reason: str | None = None) -> None:
        """End the stream after what is pending has been sent; what is held is never sent."""
        if self.deflated is not None and not self.closed:
            self.deflated.close(self.held)
        super().close(reason)

    def _queue(self, item: bytes) -> None:
        (self._held if self.held else self._events).append(item)
        self._size += len(item)
        if self._size > self._max:
            self._events.clear()
            self._held.clear()
            self._size = 0
            self._cut = True
            self.close()
            return
        if not self.held:
            self._wake()

    def has_pending(self) -> bool:
        """Whether events wait to be sent by the writer coroutine."""
        return bool(self._events)

    def _has_pending(self) -> bool:
        return bool(self._events)

    def _release_held(self) -> None:
        self._events += self._held
        self._held = []

    def _take(self) -> bytes:
        events, self._events = self._events, []
        self._size = sum(map(len, self._held))
        return b"".join(events)

    def _last_chunk(self) -> bytes | None:
        if self.deflated is None or self._cut:
            return None
        return self.deflated.trailer()
