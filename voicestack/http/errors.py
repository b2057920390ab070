"""One error shape for every route: `{"error": {"code", "message"}}` with a 4xx/5xx status."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from voicestack import jsoncodec
from voicestack.echo import echoed
from voicestack.functions.errors import FunctionError
from voicestack.http.middleware import HTTPMiddleware

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


class ApiError(Exception):
    """An HTTP refusal with a status, a snake_case code and a sentence saying what to do."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    """The JSON error body every route uses."""
    body = {"error": {"code": code, "message": message, **extra}}
    return Response(jsoncodec.dumps(body), status, media_type="application/json")


def validation_fields(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic's errors as `[{"field", "message"}]`, the field path dotted."""
    return [
        {
            "field": echoed(".".join(str(part) for part in err["loc"])) or "(args)",
            "message": err["msg"],
        }
        for err in exc.errors(include_url=False)
    ]


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, **exc.extra)


async def _function_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FunctionError)
    return error_response(exc.status, exc.code, exc.message)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    fields = validation_fields(exc)
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return error_response(422, "invalid_args", f"Invalid arguments: {summary}.", fields=fields)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if exc.status_code == 404:
        message = f"No route matches {echoed(request.url.path)}."
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {echoed(request.url.path)}."
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, code, message)


INTERNAL_MESSAGE = "The server failed to handle this request; its log has the details."


async def _internal_error(_request: Request, _exc: Exception) -> Response:
    # Reached only for errors outside CatchAll (in middleware); Starlette then logs and closes.
    return error_response(500, "internal_error", INTERNAL_MESSAGE)


class CatchAll(HTTPMiddleware):
    """ASGI middleware answering any unhandled exception with the JSON 500, logged once.

    Unlike Starlette's outermost error middleware it does not re-raise, so the server keeps the
    connection open as the response promised, instead of closing it under the client.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; an exception it raises before responding becomes the JSON 500."""
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:
                log_unhandled(scope)
                raise  # half a response is out: only closing the connection can say so
            await unhandled_error(scope)(scope, receive, send)


def log_unhandled(scope: Scope) -> None:
    """Log the exception being handled as a bug of the request `scope`."""
    log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))


def unhandled_error(scope: Scope) -> Response:
    """The JSON 500 for the exception being handled, logged once, as a bug."""
    log_unhandled(scope)
    return error_response(500, "internal_error", INTERNAL_MESSAGE)


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    FunctionError: _function_error,
    ValidationError: _validation_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}


async def error_answer(request: Request, exc: Exception) -> Response:
    """The response a route's `exc` gets (from inside an `except`): its handler's answer, as
    the app gives it (EXCEPTION_HANDLERS, by the exception's classes), else the logged 500."""
    for kind in type(exc).__mro__:
        handler = EXCEPTION_HANDLERS.get(kind)
        if handler is not None and kind is not Exception:
            return await handler(request, exc)
    return unhandled_error(request.scope)
