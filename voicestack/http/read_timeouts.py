"""Read timeouts: a request's headers must arrive within `--header-timeout-s`, and its body may
not stall for `--body-timeout-s`.

uvicorn has neither: its only timer closes idle keep-alive connections, so a client that sends
half a request, or stops mid-body, holds a connection and a task for as long as it likes.

Headers are timed in the protocol (HeaderDeadline, mixed into uvicorn's protocol class), from
the connection's start or the first byte of each next request until the headers are complete;
a client that sent part of a request is answered `408 header_timeout`, then closed. Bodies are
timed in the app (BodyTimeout): each wait for the next piece of a body is bounded, and a stall
is answered `408 body_timeout` with `connection: close`, so uvicorn closes the connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voicestack import jsoncodec
from voicestack.http.errors import error_response
from voicestack.http.headers import with_security_headers
from voicestack.http.middleware import HTTPMiddleware

_STATUS_408 = b"HTTP/1.1 408 Request Timeout\r\n"


def _header_timeout_message(seconds: float) -> str:
    return f"The request's headers did not arrive within {seconds:g} s (--header-timeout-s)."


def _body_timeout_message(seconds: float) -> str:
    return (
        f"The request body stalled: no bytes arrived for {seconds:g} s (--body-timeout-s)."
        " Send the body without pauses."
    )


class HeaderDeadline:
    """Mixin for a uvicorn HTTP protocol: close a connection whose request headers are late.

    `header_timeout_s` is set on the class that with_header_deadline() makes.
    """

    header_timeout_s: float = 10.0
    # What the mixed-in uvicorn protocol provides.
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any
    server_state: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        """Accept the connection as uvicorn does, and start timing its first request's head."""
        super().connection_made(transport)  # type: ignore[misc]
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = False
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        """Parse as uvicorn does; then time the head of a request that has begun, or stop."""
        waiting = self._waiting_for_head()
        super().data_received(data)  # type: ignore[misc]
        if self._waiting_for_head():
            self._head_bytes = self._head_bytes or bool(data)
            self._arm_head_timer()
        elif waiting or self._head_timer is not None:
            self._disarm_head_timer()  # the headers are complete: a request is in flight

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the timer, then let uvicorn clean up."""
        self._disarm_head_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        timer, self._head_timer, self._head_bytes = self._head_timer, None, False
        if timer is not None:
            timer.cancel()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._waiting_for_head():
            return
        if self._head_bytes:
            body = jsoncodec.dumps(
                {
                    "error": {
                        "code": "header_timeout",
                        "message": _header_timeout_message(self.header_timeout_s),
                    }
                }
            )
            headers = [
                *self.server_state.default_headers,
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            lines = [
                name + b": " + value + b"\r\n" for name, value in with_security_headers(headers)
            ]
            self.transport.write(b"".join([_STATUS_408, *lines, b"\r\n", body]))
        self.transport.close()


def with_header_deadline(protocol: type, seconds: float) -> type[asyncio.Protocol]:
    """`protocol` (a uvicorn HTTP protocol class) closing connections whose request headers take
    longer than `seconds`."""
    return type(
        f"HeaderDeadline{protocol.__name__}",
        (HeaderDeadline, protocol),
        {"header_timeout_s": seconds, "__module__": __name__},
    )


class BodyStalled(Exception):
    """No piece of the request body arrived within the body timeout."""


class BodyTimeout(HTTPMiddleware):
    """ASGI middleware: a request body that stalls for `seconds` is answered 408 and closed.

    Only waits for more of a body are timed; once the body is complete, `receive` is passed
    through untouched (a streaming response waits on it for the disconnect).
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        super().__init__(app)
        self.seconds = seconds

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a `receive` that gives up on a stalled body."""
        body_done = False
        started = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.seconds)
            except TimeoutError:
                raise BodyStalled from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracking_send)
        except BodyStalled:
            if started:
                raise  # half a response is out: only closing the connection can say so
            response = error_response(408, "body_timeout", _body_timeout_message(self.seconds))
            response.headers["connection"] = "close"
            await response(scope, receive, send)
