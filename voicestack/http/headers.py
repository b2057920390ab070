"""Security headers on every response, added when the response starts and never after.

The page's URL carries its token, so nothing may leak it in a Referer; no response may be
framed or sniffed into another type; API responses are never cached and, opened as a document,
may load nothing. A header the route set itself wins: the page keeps its own policy, files their
own caching. Only the `http.response.start` message is touched, so an event stream is never
held back, and chunks the SSE fast path writes straight to the socket (serve/fastpath.py) are
already past this point.
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Content-Security-Policy for everything but the page (which sets its own in http/web.py).
API_POLICY = "default-src 'none'; frame-ancestors 'none'"

DEFAULT_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", API_POLICY.encode()),
    (b"cache-control", b"no-store"),
)


def with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` followed by each default header they do not already have."""
    present = {name.lower() for name, _ in headers}
    return headers + [pair for pair in DEFAULT_HEADERS if pair[0] not in present]


def secured(send: Send) -> Send:
    """`send` adding the default security headers to the response's start."""

    def send_with_headers(message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            # A new list and message: a response may send a shared, constant header list.
            headers = with_security_headers(list(message.get("headers", ())))
            message = {**message, "headers": headers}
        return send(message)

    return send_with_headers


class SecurityHeaders:
    """ASGI middleware: the default security headers on every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # The app's awaitable is handed back, not awaited in a frame of this layer (see
        # voicestack/http/middleware.py); only the response's start is touched.
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        return self.app(scope, receive, secured(send))
