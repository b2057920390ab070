"""HTTPMiddleware: the base of our ASGI middleware that acts on HTTP requests only.

Lifespan and WebSocket scopes pass straight through to the wrapped app, so a subclass writes only
what it does to an HTTP request.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class HTTPMiddleware:
    """ASGI middleware whose `handle` sees every HTTP request; other scopes pass through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request, calling `self.app` for the response."""
        raise NotImplementedError
