"""Cross-origin calls from the pages of the origins `--cors-origin` names, through Starlette's
CORSMiddleware.

Tokens travel in the Authorization header (or `?token=` on event streams), never in cookies, so
no credentials mode is needed. A refused preflight gets voicestack's JSON error instead of
Starlette's plain text, and no `Access-Control-Allow-Origin`.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from voicestack.http.errors import error_response

METHODS = ("GET", "POST")
REQUEST_HEADERS = ("Authorization", "Content-Type", "Last-Event-ID")
# What a page's script may read beyond the safelisted headers: when to retry after a 429.
EXPOSED_HEADERS = ("Retry-After",)


class Cors(CORSMiddleware):
    """Starlette's CORSMiddleware, answering a refused preflight with the JSON error shape."""

    def preflight_response(self, request_headers: Headers) -> Response:
        """The preflight answer: 200, or 400 `cors_refused` saying what was not allowed."""
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        error = error_response(
            400,
            "cors_refused",
            f"This cross-origin request is not allowed (its {refused}); the server names the"
            " origins it allows with --cors-origin.",
        )
        for name, value in response.headers.items():
            if name not in ("content-type", "content-length"):
                error.headers[name] = value
        return error


def cors_middleware(origins: Sequence[str]) -> list[Middleware]:
    """The CORS middleware for `origins`: none at all when no origin is allowed."""
    if not origins:
        return []
    return [
        Middleware(
            Cors,
            allow_origins=list(origins),
            allow_methods=METHODS,
            allow_headers=REQUEST_HEADERS,
            expose_headers=EXPOSED_HEADERS,
        )
    ]
