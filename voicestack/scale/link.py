"""An edge's link to the primaries over NATS: forwarded calls, stream openings, and the
routing of each stream's events to the upstream that holds it.

A call's body too large for one NATS message stays here while the call lasts, and the primary
that takes the call reads it in parts (`request_bodies`): so an edge takes the bodies a single
server takes (uploads, long spoken turns), whatever nats-server's max_payload.

The link notices a primary's loss by its missing hellos, and NATS's loss by the connection:
either way the streams stay open to their clients, writes are answered 503 with Retry-After,
and every upstream resyncs once a primary answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from voicestack import jsoncodec
from voicestack.scale import subjects
from voicestack.scale.envelope import RequestEnvelope, ResponseEnvelope
from voicestack.scale.journal import JournalEvent, read_journal
from voicestack.scale.nats_sync import settled
from voicestack.scale.primaries import Primaries
from voicestack.scale.primary import END_HEADER
from voicestack.scale.sockets import FRAME_HEADER, SocketAnswer
from voicestack.scale.stream_wire import HEAD_ROOM, Reassembly

log = logging.getLogger(__name__)

# How long an edge waits for a primary's answer to a forwarded call (replies may take long:
# an action can wait on a model).
CALL_TIMEOUT_S = 120.0
OPEN_TIMEOUT_S = 15.0
# An opening on a thread's home primary (voicestack/scale/primaries.py): a home that does not
# answer within this is passed over, and any primary asked instead.
HOME_OPEN_TIMEOUT_S = 3.0
RENEW_S = 1.0


class Answer(Protocol):
    """A primary's answer to an opening: whether it streams, and which primary holds it."""

    primary: str | None

    @property
    def ok(self) -> bool:
        """Whether the stream (or socket) is open."""
        ...


Opened = TypeVar("Opened", bound=Answer)


class PrimaryUnavailable(Exception):
    """No primary answered (NATS is down, or no primary is subscribed, or it timed out);
    `undelivered` when the request surely reached no primary (it timed out otherwise)."""

    def __init__(self, reason: str, undelivered: bool = False) -> None:
        super().__init__(reason)
        self.undelivered = undelivered


class Upstream(Protocol):
    """What the link routes a stream's messages to."""

    primary: str | None

    def receive(self, chunk: bytes) -> None:
        """A chunk of the stream's SSE bytes."""
        ...

    def ended(self, reason: str) -> None:
        """The primary ended the stream (`closed`, or `primary_stopping`)."""
        ...

    def primary_lost(self) -> None:
        """The stream's primary or NATS went away: reopen it when one answers."""
        ...

    def frame(self, kind: str, payload: bytes) -> None:
        """A frame of a relayed WebSocket (only sockets get these)."""
        ...


class EdgeLink:
    """This edge's NATS connection, and the streams it holds open on primaries."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.id = uuid.uuid4().hex[:16]
        self._nc: Client | None = None
        self._streams: dict[str, Upstream] = {}
        self._wire: dict[str, Reassembly] = {}
        self._opening: set[str] = set()  # streams whose opening is still unanswered
        self.primaries = Primaries()
        self._loops: list[asyncio.Task[None]] = []
        self.on_reconnect: list[Callable[[], None]] = []
        # Thread events the journal let feed upstreams keep from before they began.
        self.journal_events = 0
        self.reopens = 0  # streams reopened after their primary was lost (or moved home)
        # Bodies of calls in progress too large for one message, by id: primaries read them.
        self._bodies: dict[str, bytes] = {}

    @property
    def connected(self) -> bool:
        """Whether NATS is reachable now."""
        return self._nc is not None and self._nc.is_connected

    async def start(self) -> None:
        """Connect to NATS (retrying in the background until it answers)."""
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._connect(), name="voicestack-edge-connect"),
            loop.create_task(self._renew(), name="voicestack-edge-renew"),
        ]

    async def _connect(self) -> None:
        while self._nc is None:
            try:
                nc = await nats.connect(
                    self.url,
                    name=f"voicestack-edge-{self.id}",
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    error_cb=_log_error,
                )
            except Exception as exc:  # not up yet: keep trying, streams wait
                log.warning("cannot reach NATS at %s (%s); retrying", self.url, exc)
                await asyncio.sleep(0.5)
                continue
            await nc.subscribe(subjects.edge_streams(self.id), cb=self._on_stream)
            await nc.subscribe(subjects.request_bodies(self.id), cb=self._on_body_part)
            await nc.subscribe(subjects.HELLO, cb=self._on_hello)
            self._nc = nc
            log.info("edge %s linked to NATS at %s", self.id, self.url)

    async def _disconnected(self) -> None:
        log.warning("edge lost NATS; streams stay open, writes get 503 until it is back")

    async def _reconnected(self) -> None:
        log.info("edge reconnected to NATS; resyncing its streams")
        # Messages published while the link was down are lost: every stream reopens (one
        # still opening is judged by its answer, and by its numbering if it opened).
        for stream_id, upstream in list(self._streams.items()):
            if stream_id not in self._opening:
                self.forget_stream(stream_id)
                upstream.primary_lost()

    async def call(
        self, request: RequestEnvelope, primary: str | None = None, timeout: float | None = None
    ) -> ResponseEnvelope:
        """A primary's response to `request` (`primary`'s own, when given) within `timeout`
        seconds (by default CALL_TIMEOUT_S, or OPEN_TIMEOUT_S for one primary's own);
        PrimaryUnavailable when none answers."""
        body = _Body()
        stream_id = uuid.uuid4().hex[:16]
        if len(request.body) > self.part_size():
            size = len(request.body)
            self._bodies[stream_id] = request.body
            parts = (subjects.request_bodies(self.id), stream_id, size)
            request = dataclasses.replace(request, body=b"", body_parts=parts)
        request.stream_subject = subjects.stream_subject(self.id, stream_id)
        self._streams[stream_id] = body
        subject = subjects.CALL if primary is None else subjects.call_on(primary)
        # A call to one primary is a stream's business (a client joining it): if that primary
        # is gone, the stream resyncs elsewhere, and the sooner it knows the better.
        if timeout is None:
            timeout = CALL_TIMEOUT_S if primary is None else OPEN_TIMEOUT_S
        try:
            msg = await self._request(subject, request.encode(), timeout)
            response = ResponseEnvelope.decode(msg.data)
            if response.streamed:
                try:
                    response.body = await asyncio.wait_for(body.whole, OPEN_TIMEOUT_S)
                except TimeoutError:
                    raise PrimaryUnavailable("a large response did not arrive whole") from None
            return response
        finally:
            self.forget_stream(stream_id)
            self._bodies.pop(stream_id, None)

    def part_size(self) -> int:
        """The largest body sent inside its call's message; a larger one goes in parts of
        this size."""
        payload = self._nc.max_payload if self._nc is not None else 1024 * 1024
        return max(payload - HEAD_ROOM, payload // 2)

    async def _on_body_part(self, msg: Msg) -> None:
        """A primary reads part of a call's body: `ID OFFSET` is answered with the part from
        there (empty once the call is over, or for a body this edge does not hold)."""
        body_id, _, offset = msg.data.decode("latin-1").partition(" ")
        body = self._bodies.get(body_id)
        part = b""
        if body is not None and offset.isdigit():
            start = int(offset)
            part = body[start : start + self.part_size()]
        with contextlib.suppress(NatsError):
            await msg.respond(part)

    async def open(
        self, request: RequestEnvelope, upstream: Upstream, primary: str | None = None
    ) -> tuple[str, ResponseEnvelope]:
        """Open `request`'s stream on a primary (`primary`, when given: then within
        HOME_OPEN_TIMEOUT_S, and a primary that does not answer is passed over for a while),
        its events routed to `upstream`; returns the stream's id and the primary's answer (a
        head when it streams, else its refusal)."""
        if primary is None:
            stream_id, msg = await self._open(subjects.OPEN, request, upstream)
        else:
            subject = subjects.open_on(primary)
            try:
                stream_id, msg = await self._open(subject, request, upstream, HOME_OPEN_TIMEOUT_S)
            except PrimaryUnavailable:
                if self.connected:  # not the primary's fault while NATS is away
                    self.primaries.unanswered(primary)
                raise
            self.primaries.answered(primary)
        head = self._opened(stream_id, msg, ResponseEnvelope.decode)
        return stream_id, head

    async def open_socket(
        self, request: RequestEnvelope, relay: Upstream
    ) -> tuple[str, SocketAnswer]:
        """Open a relayed WebSocket on a primary, its frames routed to `relay`; returns the
        socket's id and how the primary's application answered."""
        stream_id, msg = await self._open(subjects.SOCKET, request, relay)
        answer = self._opened(stream_id, msg, SocketAnswer.decode)
        return stream_id, answer

    async def _open(
        self,
        subject: str,
        request: RequestEnvelope,
        upstream: Upstream,
        timeout: float = OPEN_TIMEOUT_S,
    ) -> tuple[str, Msg]:
        stream_id = uuid.uuid4().hex[:16]
        request.stream_subject = subjects.stream_subject(self.id, stream_id)
        self._streams[stream_id] = upstream
        self._opening.add(stream_id)
        try:
            return stream_id, await self._request(subject, request.encode(), timeout)
        except BaseException:
            self.forget_stream(stream_id)
            raise
        finally:
            self._opening.discard(stream_id)

    def _opened(self, stream_id: str, msg: Msg, decode: Callable[[bytes], Opened]) -> Opened:
        """The primary's answer to an opening; a refusal stops routing the stream."""
        try:
            answer = decode(msg.data)
        except BaseException:
            self.forget_stream(stream_id)
            raise
        if not answer.ok:
            self.forget_stream(stream_id)
        elif answer.primary is not None and not self.primaries.known(answer.primary):
            # Alive, but whether it serves its hellos say (it may be draining).
            self.primaries.hello(answer.primary, serving=False)
        return answer

    async def send_frame(self, primary: str, stream_id: str, kind: str, payload: bytes) -> bool:
        """Send a client's frame to the primary holding its socket; False when NATS is down."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return False
        subject = subjects.socket_frames(primary, self.id, stream_id)
        try:
            await nc.publish(subject, payload, headers={FRAME_HEADER: kind})
        except NatsError:
            return False
        return True

    async def close_stream(self, stream_id: str, primary: str | None) -> None:
        """Let go of a stream: its primary ends it."""
        self.forget_stream(stream_id)
        nc = self._nc
        if primary is None or nc is None or not nc.is_connected:
            return  # the primary's lease ends it
        note = jsoncodec.dumps({"edge": self.id, "close": [stream_id]})
        with contextlib.suppress(NatsError):
            await nc.publish(subjects.primary_inbox(primary), note)

    async def leave_shared(self, primary: str | None, share: str, member: str) -> None:
        """A client left the shared stream `share` that `primary` holds: the primary's access
        guard forgets it."""
        nc = self._nc
        if primary is None or nc is None or not nc.is_connected:
            return  # its stream is being reopened: the primary that holds it next never hears of it
        note = jsoncodec.dumps({"edge": self.id, "leave": [[share, member]]})
        with contextlib.suppress(NatsError):
            await nc.publish(subjects.primary_inbox(primary), note)

    async def read_journal(self, thread_id: str) -> list[JournalEvent] | None:
        """What the thread journal holds of the thread (voicestack/scale/journal.py); None
        without one, or while NATS is away."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return None
        return await read_journal(nc, thread_id)

    def forget_stream(self, stream_id: str) -> None:
        """Stop routing a stream's messages (it is being replaced, or has ended)."""
        self._streams.pop(stream_id, None)
        self._wire.pop(stream_id, None)

    async def _request(self, subject: str, payload: bytes, timeout: float) -> Msg:
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise PrimaryUnavailable("NATS is not reachable.", undelivered=True)
        try:
            return await nc.request(subject, payload, timeout=timeout)
        except NatsError as exc:
            undelivered = isinstance(exc, NoRespondersError)
            reason = f"No primary answered ({type(exc).__name__})."
            raise PrimaryUnavailable(reason, undelivered) from None

    async def subscribe(self, subject: str, cb: Callable[[Msg], Awaitable[None]]) -> Subscription:
        """Subscribe `cb` to `subject` (kept across reconnections), in place at the server
        once this returns; PrimaryUnavailable while NATS is away."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise PrimaryUnavailable("NATS is not reachable.")
        try:
            subscription = await nc.subscribe(subject, cb=cb)
            await settled(nc, OPEN_TIMEOUT_S)
        except (NatsError, TimeoutError) as exc:
            raise PrimaryUnavailable(f"NATS did not take a subscription ({exc!r}).") from None
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        """Drop a subscription (nothing to do once NATS is gone)."""
        with contextlib.suppress(NatsError):
            await subscription.unsubscribe()

    async def _on_stream(self, msg: Msg) -> None:
        stream_id = msg.subject.rsplit(".", 1)[1]
        upstream = self._streams.get(stream_id)
        if upstream is None:
            return  # a stream this edge let go of, or replaced
        self.route(stream_id, upstream, self._wire.setdefault(stream_id, Reassembly()), msg)

    def route(self, stream_id: str, upstream: Upstream, wire: Reassembly, msg: Msg) -> bool:
        """Hand one message of the stream `stream_id` to its upstream: whole messages only; a
        missed one resyncs the stream, and its last one ends it. False once the stream takes
        no more messages (it is over, or being reopened)."""
        payload = wire.take(msg.headers, msg.data)
        if payload is None:
            return True  # more parts to come
        headers = msg.headers or {}
        if payload is False:
            log.warning("a stream missed a message (slow edge?); resyncing it")
            self.forget_stream(stream_id)
            upstream.primary_lost()
            return False
        if END_HEADER in headers:
            self.forget_stream(stream_id)
            upstream.ended(headers[END_HEADER])
            return False
        if FRAME_HEADER in headers:
            upstream.frame(headers[FRAME_HEADER], bytes(payload))
        elif payload:
            upstream.receive(bytes(payload))
        return True

    async def _on_hello(self, msg: Msg) -> None:
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            hello = json.loads(msg.data)
            # A primary of an earlier version says nothing of serving: it serves, but takes no
            # opening on a subject of its own, so it is nobody's home.
            self.primaries.hello(str(hello["primary"]), hello.get("serving") is True)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_S)
            by_primary: dict[str, list[str]] = {}
            for stream_id, upstream in list(self._streams.items()):
                primary = upstream.primary
                if primary is None:
                    continue
                if self.primaries.gone(primary):
                    self.forget_stream(stream_id)
                    upstream.primary_lost()
                else:
                    by_primary.setdefault(primary, []).append(stream_id)
            nc = self._nc
            if nc is None or not nc.is_connected:
                continue
            for primary, held in by_primary.items():
                note = jsoncodec.dumps({"edge": self.id, "hold": held})
                with contextlib.suppress(NatsError):
                    await nc.publish(subjects.primary_inbox(primary), note)

    async def close(self) -> None:
        """Leave NATS (primaries end this edge's streams when their leases lapse)."""
        for task in self._loops:
            task.cancel()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None


class _Body:
    """Where a call's response body arrives when it was too large for the reply."""

    primary: str | None = None

    def __init__(self) -> None:
        self.whole: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def receive(self, chunk: bytes) -> None:
        """The body, joined from its parts."""
        if not self.whole.done():
            self.whole.set_result(chunk)

    def ended(self, reason: str) -> None:
        """Not sent for bodies."""

    def primary_lost(self) -> None:
        """A part was missed: the call fails as if no primary answered."""
        if not self.whole.done():
            self.whole.set_exception(PrimaryUnavailable("a large response lost a part"))
            self.whole.exception()  # retrieved: nobody may be waiting for a body

    def frame(self, kind: str, payload: bytes) -> None:
        """Not sent for bodies."""


async def _log_error(exc: Exception) -> None:
    log.warning("NATS: %s", exc)
