"""The body read timeout: a request body may not stall for `--body-timeout-s`.

uvicorn has no such timer, so a client that stops mid-body would hold a connection and a task
for as long as it likes. Bodies are timed in the app (BodyTimeout): each wait for the next piece
of a body is bounded, and a stall is answered `408 body_timeout` with `connection: close`, so
uvicorn closes the connection. Headers are timed in the protocol
(voicestack/serve/header_deadline.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voicestack.http.errors import error_response
from voicestack.http.middleware import HTTPMiddleware


def _body_timeout_message(seconds: float) -> str:
    return (
        f"The request body stalled: no bytes arrived for {seconds:g} s (--body-timeout-s)."
        " Send the body without pauses."
    )


class BodyStalled(Exception):
    """No piece of the request body arrived within the body timeout."""


def body_arrival(receive: Receive) -> Callable[[], bool] | None:
    """For uvicorn's own `receive` (a request cycle's bound method): a test of whether it would
    return at once, its next piece of body (or its end) being in hand. None for any other."""
    event = getattr(getattr(receive, "__self__", None), "message_event", None)
    return event.is_set if isinstance(event, asyncio.Event) else None


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
        arrived = body_arrival(receive)

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            if arrived is not None and arrived():
                # The usual case, a body sent with its headers: nothing to time, and a timer
                # for every call would be most of what reading the body costs.
                message = await receive()
            else:
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
