"""The primary's side of scale-out: it answers edges' requests and pumps their streams.

Every request an edge forwards (a call, an upload, a token check, a stream's opening) runs
through this process's own application, so an edge serves exactly the public API a single
server does. A stream an edge opens is one stream here, whatever number of the edge's clients
share it: the hub evaluates each distinct subscription once. A watch is opened with its
clients' credentials, and the access guard ends it at the commit that revokes them, as for any
client. A thread's feed is shared by clients of any credentials, so each of them joins it as a
member instead, and the guard ends that member alone (voicestack/agent/shared_feeds.py); and
it is one stream for every edge that follows the thread, published once
(voicestack/scale/thread_streams.py).

Edges renew their streams every second or so (`hold`); a stream not renewed for LEASE_S, whose
edge died, ends here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from starlette.types import ASGIApp

from voicestack import jsoncodec
from voicestack.agent.shared_feeds import SharedFeeds
from voicestack.http.app import AppService
from voicestack.http.errors import INTERNAL_MESSAGE
from voicestack.runtime import Runtime
from voicestack.scale import subjects
from voicestack.scale.asgi_call import PumpedStream, call_app
from voicestack.scale.envelope import RequestEnvelope
from voicestack.scale.errors import error_envelope
from voicestack.scale.journal_publisher import JournalPublisher
from voicestack.scale.sockets import FRAME_HEADER, PumpedSocket, SocketAnswer
from voicestack.scale.stream_wire import HEAD_ROOM, StreamPublisher
from voicestack.scale.thread_streams import Holding, Key, ThreadStreams, shared_thread

log = logging.getLogger(__name__)

LEASE_S = 10.0
# A call's body that an edge holds is read in parts (voicestack/scale/link.py): each must come
# within this, and the whole may be no larger than this (edges bound what they take far below).
BODY_PART_S = 10.0
MAX_BODY_BYTES = 1 << 30
# The header on a stream's last message: why it ended.
END_HEADER = "Voicestack-End"
END_STOPPING = "primary_stopping"  # the primary is shutting down: resume on another one
END_CLOSED = "closed"  # the stream is over (its viewer lost access, or it failed)


@dataclass(eq=False)
class _Held:
    stream: PumpedStream | PumpedSocket | Holding
    edge: str
    renewed: float


class PrimaryBridge:
    """Connects to NATS, serves edges with `app`, and announces this primary while it runs."""

    def __init__(
        self,
        app: ASGIApp,
        url: str,
        stopping: Callable[[], bool],
        shared: SharedFeeds,
    ) -> None:
        """`stopping()`: whether this process is shutting down (its streams then end as
        `primary_stopping`, so that edges resume them elsewhere). `shared`: the thread streams
        edges share, and their members."""
        self.app = app
        self.url = url
        self.id = uuid.uuid4().hex[:16]
        self._stopping = stopping
        self._shared = shared
        self._nc: Client | None = None
        self._streams: dict[Key, _Held] = {}
        self.threads = ThreadStreams(
            app,
            self._publisher,
            self._thread_ended,
            shared,
            self._largest_answer,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._serving: list[Subscription] = []
        self._journal: JournalPublisher | None = None

    async def start(self) -> None:
        """Connect (retrying until NATS answers) and start answering edges."""
        self._nc = await nats.connect(
            self.url,
            name=f"voicestack-primary-{self.id}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            allow_reconnect=True,
            error_cb=_log_error,
            reconnected_cb=self._reconnected,
        )
        nc = self._nc
        self._serving = [
            await nc.subscribe(subjects.CALL, queue=subjects.PRIMARIES, cb=self._on_call),
            await nc.subscribe(subjects.OPEN, queue=subjects.PRIMARIES, cb=self._on_open),
            await nc.subscribe(subjects.SOCKET, queue=subjects.PRIMARIES, cb=self._on_socket),
            await nc.subscribe(subjects.open_on(self.id), cb=self._on_open),
        ]
        await nc.subscribe(subjects.call_on(self.id), cb=self._on_call)
        await nc.subscribe(subjects.primary_inbox(self.id), cb=self._on_inbox)
        await nc.subscribe(subjects.primary_frames(self.id), cb=self._on_frame)
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._announce(), name="voicestack-primary-hello"),
            loop.create_task(self._expire_leases(), name="voicestack-primary-leases"),
        ]
        log.info("primary %s serving edges over %s", self.id, self.url)

    def journal(self, runtime: Runtime) -> None:
        """Publish every thread event to the thread journal (voicestack/scale/journal.py)."""
        assert self._nc is not None
        self._journal = JournalPublisher(self._nc, runtime.store)
        runtime.hub.add_observer(self._journal)
        self._journal.start()

    async def _reconnected(self) -> None:
        if self._journal is not None:
            self._journal.reconnected()

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_call(self, msg: Msg) -> None:
        self._spawn(self._answer_call(msg))

    async def _answer_call(self, msg: Msg) -> None:
        try:
            request = RequestEnvelope.decode(msg.data)
        except (ValueError, KeyError, TypeError):
            await msg.respond(error_envelope(400, "bad_envelope", "Not a request.").encode())
            return
        if request.body_parts is not None:
            body = await self._read_body(*request.body_parts)
            if body is None:
                lost = error_envelope(
                    502, "body_unavailable", "The request's body could not be read from its edge."
                )
                await msg.respond(lost.encode())
                return
            request.body = body
        response = await call_app(self.app, request)
        encoded = response.encode()
        nc = self._nc
        if nc is not None and len(encoded) > nc.max_payload - 4096:
            if request.stream_subject is None:
                encoded = error_envelope(
                    502, "response_too_large", "The response does not fit one NATS message."
                ).encode()
            else:  # the body goes in parts to where the edge waits for it
                await StreamPublisher(nc, request.stream_subject).send(response.body)
                response.body, response.streamed = b"", True
                encoded = response.encode()
        await msg.respond(encoded)

    async def _read_body(self, subject: str, body_id: str, size: int) -> bytes | None:
        """A call's body, read in parts from the edge that holds it; None when the edge no
        longer answers for it, or it is not the size announced."""
        nc = self._nc
        if nc is None or not 0 < size <= MAX_BODY_BYTES:
            return None
        parts: list[bytes] = []
        read = 0
        while read < size:
            try:
                answer = await nc.request(
                    subject, f"{body_id} {read}".encode(), timeout=BODY_PART_S
                )
            except NatsError:
                return None
            if not answer.data:
                return None
            parts.append(answer.data)
            read += len(answer.data)
        return b"".join(parts) if read == size else None

    def _publisher(self, subject: str) -> StreamPublisher:
        assert self._nc is not None
        return StreamPublisher(self._nc, subject)

    def _largest_answer(self) -> int:
        nc = self._nc
        return (nc.max_payload if nc is not None else 1 << 20) - HEAD_ROOM

    async def _thread_ended(self, publisher: StreamPublisher, holders: set[Key]) -> None:
        for key in holders:
            self._streams.pop(key, None)
        reason = END_STOPPING if self._stopping() else END_CLOSED
        await publisher.send(b"", {END_HEADER: reason})

    async def _on_open(self, msg: Msg) -> None:
        self._spawn(self._open(msg))

    async def _opening(
        self, msg: Msg, refusal: bytes
    ) -> tuple[RequestEnvelope, tuple[str, str], StreamPublisher] | None:
        """A stream's or socket's opening: its request, (edge, stream id) and publisher; None
        once `refusal` has answered an opening that is not one."""
        try:
            request = RequestEnvelope.decode(msg.data)
            edge, stream_id, subject = _stream_of(request)
        except (ValueError, KeyError, TypeError):
            await msg.respond(refusal)
            return None
        assert self._nc is not None
        return request, (edge, stream_id), StreamPublisher(self._nc, subject)

    async def _open(self, msg: Msg) -> None:
        refusal = error_envelope(400, "bad_envelope", "Not a stream.").encode()
        if (opening := await self._opening(msg, refusal)) is None:
            return
        request, key, publisher = opening
        thread_id = shared_thread(request)
        if thread_id is not None:
            try:
                opened = await self.threads.open(thread_id, request, key)
            except Exception:
                log.exception("an edge's thread stream could not be opened")
                opened = error_envelope(500, "internal_error", INTERNAL_MESSAGE), None
            if opened is not None:  # else its catch-up is too large: a stream of its own
                head, holding = opened
                if holding is not None:
                    now = asyncio.get_running_loop().time()
                    self._streams[key] = _Held(holding, key[0], now)
                head.primary = self.id
                await msg.respond(head.encode())
                return

        async def ended() -> None:
            self._streams.pop(key, None)
            reason = END_STOPPING if self._stopping() else END_CLOSED
            await publisher.send(b"", {END_HEADER: reason})

        stream = PumpedStream(self.app, request, publisher.send, ended)
        self._streams[key] = _Held(stream, key[0], asyncio.get_running_loop().time())
        head = await stream.opened()
        if not stream.streaming:
            self._streams.pop(key, None)
        head.primary = self.id
        await msg.respond(head.encode())

    async def _on_socket(self, msg: Msg) -> None:
        self._spawn(self._open_socket(msg))

    async def _open_socket(self, msg: Msg) -> None:
        refusal = SocketAnswer(False, None, 1008, "bad_envelope").encode()
        if (opening := await self._opening(msg, refusal)) is None:
            return
        request, key, publisher = opening

        async def send_frame(kind: str, payload: bytes) -> None:
            await publisher.send(payload, {FRAME_HEADER: kind})

        socket = PumpedSocket(self.app, request, send_frame)
        self._streams[key] = _Held(socket, key[0], asyncio.get_running_loop().time())
        answer = await socket.opened()
        if answer.accepted and socket.task is not None:
            socket.task.add_done_callback(lambda _: self._streams.pop(key, None))
        else:
            self._streams.pop(key, None)
        answer.primary = self.id
        await msg.respond(answer.encode())

    async def _on_frame(self, msg: Msg) -> None:
        edge, stream_id = msg.subject.rsplit(".", 2)[1:]
        held = self._streams.get((edge, stream_id))
        if held is not None and isinstance(held.stream, PumpedSocket):
            kind = (msg.headers or {}).get(FRAME_HEADER, "")
            held.stream.deliver(kind, msg.data)

    async def _on_inbox(self, msg: Msg) -> None:
        try:
            note = json.loads(msg.data)
            edge = str(note["edge"])
            hold = [str(s) for s in note.get("hold", [])]
            close = [str(s) for s in note.get("close", [])]
            left = [(str(share), str(member)) for share, member in note.get("leave", [])]
        except (ValueError, KeyError, TypeError):
            return
        for share, member in left:
            self._shared.leave(share, member)
        now = asyncio.get_running_loop().time()
        for stream_id in hold:
            held = self._streams.get((edge, stream_id))
            if held is not None:
                held.renewed = now
            else:  # dropped here (its lease lapsed, say) while the edge still holds it
                self._spawn(self._tell_lost(edge, stream_id))
        for stream_id in close:
            held = self._streams.pop((edge, stream_id), None)
            if held is not None:
                held.stream.close()

    async def _tell_lost(self, edge: str, stream_id: str) -> None:
        """Tell an edge that this primary no longer holds one of its streams: it reopens it."""
        nc = self._nc
        if nc is None:
            return
        with contextlib.suppress(NatsError, OSError):
            lost = StreamPublisher(nc, subjects.stream_subject(edge, stream_id))
            await lost.send(b"", {END_HEADER: END_STOPPING})

    async def _announce(self) -> None:
        while True:
            nc = self._nc
            if self._serving and self._stopping():
                # Draining: new calls and streams go to the other primaries (or get 503).
                for subscription in self._serving:
                    with contextlib.suppress(Exception):
                        await subscription.unsubscribe()
                self._serving = []
            if nc is not None and nc.is_connected:
                # A draining primary still says hello (its streams live on), as not serving:
                # edges open no thread on it (voicestack/scale/primaries.py).
                hello = jsoncodec.dumps({"primary": self.id, "serving": bool(self._serving)})
                with contextlib.suppress(Exception):
                    await nc.publish(subjects.HELLO, hello)
            await asyncio.sleep(0.2 if self._serving else subjects.HELLO_S)

    async def _expire_leases(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(LEASE_S / 4)
            now = loop.time()
            for key, held in list(self._streams.items()):
                if now - held.renewed > LEASE_S:
                    log.info("edge %s stopped renewing a stream; ending it", held.edge)
                    self._streams.pop(key, None)
                    held.stream.close()

    @property
    def stream_count(self) -> int:
        """Streams edges hold open on this primary."""
        return len(self._streams)

    async def close(self) -> None:
        """End every edge stream, stop answering, and leave NATS."""
        for task in self._loops:
            task.cancel()
        if self._journal is not None:
            await self._journal.close()
        self.threads.close()
        for held in list(self._streams.values()):
            held.stream.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None


def _stream_of(request: RequestEnvelope) -> tuple[str, str, str]:
    """The edge, stream id and subject of a stream's or socket's opening; ValueError if none."""
    subject = request.stream_subject
    if subject is None or not subject.startswith(f"{subjects.PREFIX}.stream."):
        raise ValueError("no stream subject")
    edge, stream_id = subject.rsplit(".", 2)[1:]
    return edge, stream_id, subject


async def _log_error(exc: Exception) -> None:
    log.warning("NATS: %s", exc)


def serve_edges(url: str) -> AppService:
    """An app service (voicestack/http/app.py) that serves edges over NATS at `url` while the
    application runs."""

    @contextlib.asynccontextmanager
    async def run(app: ASGIApp, runtime: Runtime) -> AsyncIterator[PrimaryBridge]:
        bridge = PrimaryBridge(app, url, lambda: runtime.shutting_down, runtime.shared_feeds)
        await bridge.start()
        bridge.journal(runtime)
        try:
            yield bridge
        finally:
            await bridge.close()

    return run
