"""Running an edge's request through the primary's own application, in this process.

The primary answers forwarded requests with exactly what its HTTP server would have sent: the
same routes, authentication, limits and error shapes. A stream's response is not collected but
pumped: each body chunk is handed on as it is sent, until the stream ends or the edge lets go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Scope

from voicestack.http.state import FROM_EDGE_KEY
from voicestack.scale.envelope import RequestEnvelope, ResponseEnvelope

log = logging.getLogger(__name__)

# Where the primary's HTTP server would have put the request: none, it came over NATS.
_SERVER = ("edge-forwarded", 0)


def request_scope(request: RequestEnvelope) -> Scope:
    """The ASGI scope of a forwarded request."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": request.query_string,
        "root_path": "",
        "headers": request.headers,
        "client": request.client,
        "server": _SERVER,
        "extensions": {},
        FROM_EDGE_KEY: True,
    }


async def call_app(app: ASGIApp, request: RequestEnvelope) -> ResponseEnvelope:
    """The whole response of `app` to `request` (never a stream's: those are pumped)."""
    response = ResponseEnvelope(500)
    body: list[bytes] = []
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    received = False

    async def receive() -> Message:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await gone
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            response.status = message["status"]
            response.headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    try:
        await app(request_scope(request), receive, send)
    finally:
        if not gone.done():
            gone.set_result(None)
    response.body = b"".join(body)
    return response


Publish = Callable[[bytes], Awaitable[None]]


class PumpedStream:
    """A stream response of the primary's application, its chunks handed to `publish` in order.

    `opened()` answers the opening: the response head once the stream has started, or the
    whole response when the application refused it (an error). `close()` is the edge letting
    go: the application sees its client disconnect.
    """

    def __init__(
        self,
        app: ASGIApp,
        request: RequestEnvelope,
        publish: Publish,
        ended: Callable[[], Awaitable[None]],
    ) -> None:
        """`publish(chunk)` hands on each chunk; `ended()` is called once the stream is over."""
        self._app = app
        self._request = request
        self._publish = publish
        self._ended = ended
        self._gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._head: asyncio.Future[ResponseEnvelope] = asyncio.get_running_loop().create_future()
        self.streaming = False
        self.task: asyncio.Task[None] | None = None
        self._refused = ResponseEnvelope(500)
        self._refused_body: list[bytes] = []

    async def opened(self) -> ResponseEnvelope:
        """Start the application on the request; its answer to the opening."""
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.task.add_done_callback(_log_failure)
        return await self._head

    def close(self) -> None:
        """The edge no longer holds the stream: end it as if its client left."""
        if not self._gone.done():
            self._gone.set_result(None)

    async def _run(self) -> None:
        received = False

        async def receive() -> Message:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self._gone
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", [])]
                content_type = dict(headers).get(b"content-type", b"")
                if message["status"] == 200 and content_type.startswith(b"text/event-stream"):
                    self.streaming = True
                    self._head.set_result(ResponseEnvelope(200, headers))
                else:
                    self._refused = ResponseEnvelope(message["status"], headers)
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if self.streaming:
                    if chunk:
                        await self._publish(chunk)
                else:
                    self._refused_body.append(chunk)

        try:
            await self._app(request_scope(self._request), receive, send)
        finally:
            if not self._head.done():
                self._refused.body = b"".join(self._refused_body)
                self._head.set_result(self._refused)
            self.close()
            if self.streaming:
                with contextlib.suppress(Exception):
                    await self._ended()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("an edge's stream failed on this primary", exc_info=exc)
