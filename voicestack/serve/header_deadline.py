"""The header read timeout: a request's headers must arrive within `--header-timeout-s`.

uvicorn's only timer closes idle keep-alive connections, so a client that sends half a request
would hold a connection for as long as it likes. Headers are timed in the protocol
(HeaderDeadline, mixed into uvicorn's protocol class), from the connection's start or the first
byte of each next request until the headers are complete; a client that sent part of a request
is answered `408 header_timeout`, then closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from voicestack import jsoncodec
from voicestack.http.headers import with_security_headers

_STATUS_408 = b"HTTP/1.1 408 Request Timeout\r\n"


def _header_timeout_message(seconds: float) -> str:
    return f"The request's headers did not arrive within {seconds:g} s (--header-timeout-s)."


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
        if self._upgraded():
            self._disarm_head_timer()  # a WebSocket now owns the connection: no more HTTP heads
            return
        if self._waiting_for_head():
            self._head_bytes = self._head_bytes or bool(data)
            self._arm_head_timer()
        elif waiting or self._head_timer is not None:
            self._disarm_head_timer()  # the headers are complete: a request is in flight

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the timer, then let uvicorn clean up."""
        self._disarm_head_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _upgraded(self) -> bool:
        # uvicorn hands an upgraded connection's transport to its WebSocket protocol.
        owner: object = self.transport.get_protocol()
        return owner is not self

    def _waiting_for_head(self) -> bool:
        if getattr(self, "streaming_detached", False):
            return False  # an event stream owns the connection: no request head is due
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
        if self.transport.is_closing() or self._upgraded() or not self._waiting_for_head():
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
