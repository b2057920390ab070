"""A primary's thread streams, each published once for every edge that follows the thread.

An edge opens one stream of a thread, whoever of its clients watch it (voicestack/agent/
shared_feeds.py). The first edge to open a thread on this primary starts the stream: the
thread's events and its member controls, published to `voicestack.thread.<thread>.<instance>`.
Every other edge that opens the thread here attaches to that stream instead of starting its own:
it subscribed to the thread's subject before it asked, and the answer tells it which message to
take the stream from (`FIRST_SEQ_HEADER`) and the events it is missing before that point. So
the primary publishes each event once, however many edges follow the thread.

An attaching edge is checked as a first one is: its opening's credentials must see the thread
(the thread route's catch-up alone, run through this process's application). The stream lasts
while any edge holds it (renewed, as every stream an edge holds); when the last one lets go or
stops renewing, it ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp

from voicestack.agent.shared_feeds import SharedFeeds
from voicestack.http.state import (
    CATCH_UP_HEADER,
    CURSOR_HEADER,
    MEMBER_HEADER,
    SHARE_HEADER,
    THREAD_NEWEST_HEADER,
)
from voicestack.scale import subjects
from voicestack.scale.asgi_call import PumpedStream, call_app
from voicestack.scale.envelope import Headers, RequestEnvelope, ResponseEnvelope
from voicestack.scale.errors import error_envelope
from voicestack.scale.stream_wire import (
    FIRST_SEQ_HEADER,
    FOLLOW_HEADER,
    THREAD_STREAM_HEADER,
    StreamPublisher,
)

# (edge, the edge's stream id): one edge's hold on a stream, renewed and closed by it.
Key = tuple[str, str]
_FEED_PATH = ("/api/threads/", "/events")
# Attempts to open or attach while the thread's stream ends or is refused under the opening.
_ATTEMPTS = 3


def shared_thread(request: RequestEnvelope) -> str | None:
    """The thread of an edge's opening of its shared stream of a thread (the stream every edge
    shares); None for any other opening."""
    start, end = _FEED_PATH
    path = request.path
    if request.method != "GET" or not (path.startswith(start) and path.endswith(end)):
        return None
    names = {name for name, _ in request.headers}
    if SHARE_HEADER.encode() not in names or FOLLOW_HEADER.encode() not in names:
        return None
    if MEMBER_HEADER.encode() in names or CATCH_UP_HEADER.encode() in names:
        return None
    thread_id = path[len(start) : -len(end)]
    return thread_id if subjects.is_token(thread_id) else None


@dataclass(eq=False)
class _ThreadStream:
    thread_id: str
    instance: str
    publisher: StreamPublisher
    # Each hold, with the tag of the edge upstream that holds it (its clients' ids begin so).
    holders: dict[Key, str] = field(default_factory=dict)
    stream: PumpedStream | None = None
    started: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    done: bool = False

    @property
    def share(self) -> str:
        """The shared stream's name in SharedFeeds, and in its members' joinings."""
        return self.instance


@dataclass(eq=False)
class Holding:
    """One edge's hold on a thread stream: what the bridge renews, and closes when the edge
    lets go or stops renewing."""

    streams: ThreadStreams
    thread: _ThreadStream
    key: Key

    def close(self) -> None:
        """The edge let go: the stream ends once no edge holds it."""
        self.streams.release(self.thread, self.key)


class ThreadStreams:
    """The thread streams this primary publishes for edges, one per thread."""

    def __init__(
        self,
        app: ASGIApp,
        publisher: Callable[[str], StreamPublisher],
        ended: Callable[[StreamPublisher, set[Key]], Awaitable[None]],
        shared: SharedFeeds,
        largest_answer: Callable[[], int],
    ) -> None:
        """`publisher(subject)` publishes a stream's messages; `ended(publisher, holders)`
        says a stream is over (its last message) and forgets its holders; `shared` holds the
        streams' channels and their members; `largest_answer()` bounds the catch-up an answer
        may carry."""
        self._app = app
        self._publisher = publisher
        self._ended = ended
        self._shared = shared
        self._largest_answer = largest_answer
        self._threads: dict[str, _ThreadStream] = {}
        self._closed = False

    async def open(
        self, thread_id: str, request: RequestEnvelope, key: Key
    ) -> tuple[ResponseEnvelope, Holding | None] | None:
        """Open the thread's stream for the edge whose hold is `key`, or attach it to the one
        this primary publishes: the answer, and the hold when it streams. None when the edge
        needs a stream of its own (its catch-up does not fit an answer)."""
        for _ in range(_ATTEMPTS):
            if self._closed:
                break
            thread = self._threads.get(thread_id)
            if thread is None:
                return await self._start(thread_id, request, key)
            if not await asyncio.shield(thread.started) or thread.done:
                continue  # refused (another edge's credentials) or ended: start it anew
            try:
                return await self._attach(thread, request, key)
            except _Again:
                continue
        return _moving(), None

    async def _start(
        self, thread_id: str, request: RequestEnvelope, key: Key
    ) -> tuple[ResponseEnvelope, Holding | None]:
        instance = uuid.uuid4().hex[:16]
        publisher = self._publisher(subjects.thread_subject(thread_id, instance))
        thread = _ThreadStream(thread_id, instance, publisher)
        self._threads[thread_id] = thread
        opening = _with_headers(request, {SHARE_HEADER: thread.share})

        async def ended() -> None:
            self._forget(thread)
            holders, thread.holders = set(thread.holders), {}
            await self._ended(publisher, holders)

        stream = PumpedStream(self._app, opening, publisher.send, ended)
        thread.stream = stream
        try:
            head = await stream.opened()
        finally:
            if not thread.started.done():
                thread.started.set_result(stream.streaming)
        if not stream.streaming:
            self._forget(thread)
            return head, None
        if thread.done:  # over already (this primary is stopping, say): try again elsewhere
            return _moving(), None
        # It was subscribed before it asked: it takes the stream from its first message.
        return self._held(thread, request, key, head, 1)

    async def _attach(
        self, thread: _ThreadStream, request: RequestEnvelope, key: Key
    ) -> tuple[ResponseEnvelope, Holding | None] | None:
        """Attach an edge to a running stream: checked with its opening's credentials, and
        caught up to the message it takes the stream from. Raises _Again when the stream
        ends meanwhile."""
        first_seq = thread.publisher.next_seq
        live = self._shared.live_point(thread.share)
        if live is None:  # it is ending: start another
            self._forget(thread)
            raise _Again
        # Every event at or before `live` is in a message before `first_seq`, or still queued
        # for one after it (which the edge skips, having it already).
        since = _since(request)
        catch_up = _catch_up_request(request, live if since is None else since)
        answer = await call_app(self._app, catch_up)
        if answer.status != 200:
            return answer, None
        if len(answer.body) > self._largest_answer():
            return None
        if thread.done:
            raise _Again
        headers: Headers = [(b"content-type", b"text/event-stream")]
        if since is None:  # the edge's first opening: it follows the thread from `live`
            newest = await self._shared.thread_newest(thread.thread_id, live)
            headers += [
                (CURSOR_HEADER.encode(), str(live).encode()),
                (THREAD_NEWEST_HEADER.encode(), str(newest).encode()),
            ]
            if thread.done:
                raise _Again
        head = ResponseEnvelope(200, headers, answer.body)
        return self._held(thread, request, key, head, first_seq)

    def _held(
        self,
        thread: _ThreadStream,
        request: RequestEnvelope,
        key: Key,
        head: ResponseEnvelope,
        first_seq: int,
    ) -> tuple[ResponseEnvelope, Holding]:
        tag = _upstream_tag(request)
        thread.holders[key] = tag
        self._shared.admit_upstream(thread.share, tag)
        head.headers += [
            (SHARE_HEADER.encode(), thread.share.encode()),
            (THREAD_STREAM_HEADER.encode(), thread.instance.encode()),
            (FIRST_SEQ_HEADER.encode(), str(first_seq).encode()),
        ]
        return head, Holding(self, thread, key)

    def release(self, thread: _ThreadStream, key: Key) -> None:
        """`key` no longer holds the thread's stream: the last hold's end ends it, and an
        upstream's last hold's end forgets that upstream's members of it."""
        tag = thread.holders.pop(key, None)
        if tag is not None and tag not in thread.holders.values():
            self._shared.leave_upstream(thread.share, tag, key[1])
        if not thread.holders and thread.started.done() and thread.stream is not None:
            self._forget(thread)
            thread.stream.close()

    def _forget(self, thread: _ThreadStream) -> None:
        thread.done = True
        if self._threads.get(thread.thread_id) is thread:
            del self._threads[thread.thread_id]

    def close(self) -> None:
        """End every thread stream, and open none (the primary stops)."""
        self._closed = True
        for thread in list(self._threads.values()):
            self._forget(thread)
            if thread.stream is not None:
                thread.stream.close()


def _moving() -> ResponseEnvelope:
    return error_envelope(
        503, "feed_not_open", "The thread's stream is moving between servers: try again."
    )


class _Again(Exception):
    """The stream ended while an edge attached: open or attach anew."""


def _upstream_tag(request: RequestEnvelope) -> str:
    """The tag an edge's opening names its upstream by: the stream it proposed to share."""
    return next((v.decode("latin-1") for n, v in request.headers if n == SHARE_HEADER.encode()), "")


def _since(request: RequestEnvelope) -> int | None:
    """The event an edge's reopening continues after (None: a first opening)."""
    for name, value in parse_qsl(request.query_string.decode("latin-1")):
        if name == "since" and value.isdigit():
            return int(value)
    return None


def _with_headers(request: RequestEnvelope, extra: dict[str, str]) -> RequestEnvelope:
    """`request` with `extra` headers, in place of any of those names it had."""
    names = {name.encode() for name in extra}
    headers = [(n, v) for n, v in request.headers if n not in names]
    headers += [(name.encode(), value.encode()) for name, value in extra.items()]
    return dataclasses.replace(request, headers=headers, body=b"")


def _catch_up_request(request: RequestEnvelope, since: int) -> RequestEnvelope:
    """The thread route's catch-up alone after `since`, with the opening's credentials."""
    headers = [(n, v) for n, v in request.headers if n != SHARE_HEADER.encode()]
    headers.append((CATCH_UP_HEADER.encode(), b"1"))
    query = urlencode({"since": str(since)}).encode()
    return dataclasses.replace(request, query_string=query, headers=headers, body=b"")
