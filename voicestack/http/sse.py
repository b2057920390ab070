"""An ASGI text/event-stream response that drains one hub outbox.

On voicestack's own HTTP protocol (serve/fastpath.py) the response detaches once its headers
are out: the ASGI call returns, and the connection holds only its outbox, which the hub writes
directly and a short pump task drains when it cannot. An idle subscriber then costs no
coroutine, task or request scope (bench/peers.py measures the memory per subscriber); the
connection's loss, or the outbox's end, releases the stream.

Elsewhere (h11, an ASGI test transport) the response stays: one coroutine drains the outbox,
and one idle task waits for the client to disconnect. A generic streaming response with a task
group per connection was measured as the fan-out cost (DESIGN §6), which is why both are small.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

from starlette.types import Receive, Scope, Send

from voicestack.reactive.channel import FlowControl, Outbox
from voicestack.reactive.streams import Stream

# ASGI scope extension naming the connection's uvicorn protocol (see serve/fastpath.py).
TRANSPORT_EXTENSION = "voicestack.transport"
# ASGI scope key of the StreamRelease of a counted stream (http/limits.py).
STREAM_RELEASE_KEY = "voicestack.stream_release"


class StreamRelease:
    """Gives back a stream's place under its token's limit, once: when the ASGI call returns,
    unless the response kept it (a detached stream gives it back when it ends)."""

    def __init__(self, release: Callable[[], None]) -> None:
        self.kept = False
        self._release: Callable[[], None] | None = release

    def __call__(self) -> None:
        """Release the stream's place (the second and later calls do nothing)."""
        release, self._release = self._release, None
        if release is not None:
            release()


class Detachable(Protocol):
    """A connection that can carry an event stream without its ASGI call (serve/fastpath.py)."""

    transport: asyncio.Transport
    flow: FlowControl

    def detach(self, on_lost: Callable[[], None]) -> None:
        """Let the ASGI call return with the response open; call `on_lost` once the
        connection is gone."""
        ...


HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
    # A stream that ends closes its connection (a detached one writes its last chunk and
    # closes the socket): saying keep-alive let clients reuse it, and their next request met
    # a closed socket with no response.
    (b"connection", b"close"),
]


class ChannelResponse:
    """Streams a Stream's outbox until it closes or the client goes away, then closes it."""

    def __init__(self, stream: Stream, vary_encoding: bool = False) -> None:
        """`vary_encoding`: the response depends on the request's Accept-Encoding (say so to
        caches); the outbox's own `content_encoding`, if any, is announced."""
        self.channel = stream.outbox
        self.on_close = stream.close
        self.headers = list(HEADERS)
        if stream.outbox.content_encoding is not None:
            self.headers.append((b"content-encoding", stream.outbox.content_encoding))
        if vary_encoding:
            self.headers.append((b"vary", b"accept-encoding"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        channel = self.channel
        loop = asyncio.get_running_loop()
        channel.abort = _aborter(scope)
        watcher = asyncio.ensure_future(_close_on_disconnect(receive, channel))
        detached = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            if scope["method"] == "HEAD":
                channel.close()
            else:
                proto = (scope.get("extensions") or {}).get(TRANSPORT_EXTENSION)
                cycle = getattr(proto, "cycle", None)
                # Direct writes are pre-framed HTTP/1.1 chunks: only for a chunked response.
                if proto is not None and getattr(cycle, "chunked_encoding", False):
                    channel.attach(proto.transport, proto.flow)
                    if hasattr(proto, "detach"):
                        watcher.cancel()
                        self._detach(proto, scope)
                        detached = True
                        return
            while (chunk := await channel.next_chunk()) is not None:
                channel.sending_since = loop.time()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                channel.sending_since = None
                channel.last_write = loop.time()
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client is gone; nothing left to tell it
        finally:
            if not detached:
                watcher.cancel()
                self.on_close()

    def _detach(self, connection: Detachable, scope: Scope) -> None:
        channel, on_close = self.channel, self.on_close
        release: StreamRelease | None = scope.get(STREAM_RELEASE_KEY)
        if release is not None:
            release.kept = True

        def ended() -> None:
            channel.close()
            on_close()
            if release is not None:
                release()

        connection.detach(ended)
        channel.detach()


def _aborter(scope: Scope) -> Callable[[], object]:
    """How to drop this connection: abort its transport, so that the server sees the client
    gone and a `send` stuck on back-pressure returns; else cancel the response's task."""
    proto = (scope.get("extensions") or {}).get(TRANSPORT_EXTENSION)
    transport: asyncio.Transport | None = getattr(proto, "transport", None)
    if transport is not None:
        return transport.abort
    task = asyncio.current_task()
    assert task is not None
    return task.cancel


async def _close_on_disconnect(receive: Receive, channel: Outbox) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            channel.close()
            return
