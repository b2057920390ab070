"""HTTPMiddleware: the base of our ASGI middleware that acts on HTTP requests only.

Lifespan and WebSocket scopes pass straight through to the wrapped app, so a subclass writes only
what it does to an HTTP request. `__call__` hands back the awaitable it chose instead of awaiting
it in a frame of its own: an event stream keeps its whole middleware chain suspended for as long
as it is open, and a frame fewer per layer is memory saved per subscriber.
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Receive, Scope, Send


class HTTPMiddleware:
    """ASGI middleware whose `handle` sees every HTTP request; other scopes pass through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        return self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request, calling `self.app` for the response."""
        raise NotImplementedError
