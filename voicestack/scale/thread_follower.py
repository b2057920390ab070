"""An edge's side of a thread stream every edge shares (voicestack/scale/thread_streams.py).

The primary publishes a thread's stream once, to `voicestack.thread.<thread>.<instance>`, for
every edge that follows the thread. An edge subscribes to the thread's streams on any primary
before it opens the stream, so that nothing published after the primary's answer can be
missed; keeps what comes until the answer names its stream and the message to take it from;
then hands that stream's messages, from there on, to its upstream, numbered as every stream's
are (a missed one resyncs it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from voicestack.scale import subjects
from voicestack.scale.envelope import ResponseEnvelope
from voicestack.scale.link import EdgeLink, Upstream
from voicestack.scale.stream_wire import (
    FIRST_SEQ_HEADER,
    SEQ_HEADER,
    THREAD_STREAM_HEADER,
    Reassembly,
)

# Messages of the thread's streams kept while an opening is unanswered; past this, the stream
# is reopened (the answer could name a message no longer kept).
EARLY_KEPT = 10_000


class ThreadFollower:
    """One upstream's subscription to its thread's streams."""

    def __init__(
        self,
        link: EdgeLink,
        upstream: Upstream,
        thread_id: str,
        stream_id: Callable[[], str | None],
    ) -> None:
        """`stream_id()`: the upstream's stream now (None while it has none)."""
        self._link = link
        self._upstream = upstream
        self._thread_id = thread_id
        self._stream_id = stream_id
        self._subscription: Subscription | None = None
        self._closed = False
        self._instance: str | None = None  # the stream taken (None: none, or not yet known)
        self._wire = Reassembly()
        self._first_seq = 1  # of the stream taken: what is numbered before, its answer covered
        self._early: list[Msg] | None = None  # while an opening is unanswered
        self._early_lost = False

    @property
    def following(self) -> bool:
        """Whether the upstream's openings may be answered with a stream every edge shares
        (this follower is subscribed to them)."""
        return self._subscription is not None

    async def follow(self) -> None:
        """Subscribe, once (not for a thread id that is no subject token: its streams are the
        edge's own). Raises PrimaryUnavailable while NATS is away."""
        if self._subscription is not None or not subjects.is_token(self._thread_id):
            return
        subscription = await self._link.subscribe(
            subjects.thread_streams(self._thread_id), self._on_message
        )
        if self._closed:
            await self._link.unsubscribe(subscription)
        else:
            self._subscription = subscription

    def expect(self) -> None:
        """An opening is on its way: keep what comes until its answer."""
        self._instance, self._early, self._early_lost = None, [], False

    def answered(self, head: ResponseEnvelope | None) -> None:
        """The opening's answer (None: none came): take the stream it names, from the message
        it names, beginning with those already here. An answer naming no shared stream leaves
        the stream on the edge's own subject."""
        early, self._early = self._early or [], None
        instance = head.header(THREAD_STREAM_HEADER.encode()) if head is not None else None
        if head is None or head.status != 200 or instance is None:
            return
        first_seq = int(head.header(FIRST_SEQ_HEADER.encode()) or b"1")
        self._instance = instance.decode("latin-1")
        self._first_seq = first_seq
        self._wire = Reassembly(seq=first_seq - 1)
        if self._early_lost:
            self._link.forget_stream(self._stream_id() or "")
            self._upstream.primary_lost()
            return
        for msg in early:
            self._take(msg)

    def drop(self) -> None:
        """Take nothing more of the stream until an opening's answer names one."""
        self._instance = None

    async def _on_message(self, msg: Msg) -> None:
        if self._early is None:
            self._take(msg)
        elif len(self._early) < EARLY_KEPT:
            self._early.append(msg)
        else:
            self._early_lost = True

    def _take(self, msg: Msg) -> None:
        stream_id = self._stream_id()
        if stream_id is None or msg.subject.rsplit(".", 1)[1] != self._instance:
            return  # another primary's stream of the thread, or one this edge let go of
        if _seq(msg) < self._first_seq:
            return  # (a part of) a message the answer's catch-up covered
        if not self._link.route(stream_id, self._upstream, self._wire, msg):
            self._instance = None  # over, or lost: nothing more until an opening's answer

    def close(self) -> None:
        """Unsubscribe."""
        self._closed = True
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            asyncio.get_running_loop().create_task(self._link.unsubscribe(subscription))


def _seq(msg: Msg) -> int:
    with contextlib.suppress(KeyError, ValueError):
        return int((msg.headers or {})[SEQ_HEADER])
    return 0
