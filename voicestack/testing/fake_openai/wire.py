"""Wire-format helpers shared by the fake OpenAI endpoints: ids, SSE framing, error bodies."""

from __future__ import annotations

import json
import random
import secrets
import string
from typing import Any

from starlette.responses import JSONResponse

from voicestack.testing.fake_openai.plan import ErrorPlan

_ALPHABET = string.ascii_letters + string.digits
# Ids need to be unique, not secret: one call of a seeded generator, not a system call per
# character (the fake names every Realtime event, so this was a twentieth of its CPU).
_IDS = random.Random(secrets.randbits(128))

# Default (type, code, message) per status, as the real API words them.
_ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key at https://platform.openai.com.",
    ),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    409: ("invalid_request_error", None, "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again later.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def new_id(prefix: str, length: int = 24) -> str:
    """Return an id shaped like the real API's, e.g. `chatcmpl-AbC...`."""
    return prefix + "".join(_IDS.choices(_ALPHABET, k=length))


def request_id() -> str:
    """Return a value for the `x-request-id` response header."""
    return "req_" + secrets.token_hex(16)


def dumps(obj: Any) -> str:
    """Serialise compactly, the way the real API's SSE payloads look."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sse(data: str) -> bytes:
    """Frame one server-sent event carrying `data`."""
    return f"data: {data}\n\n".encode()


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """Return the real API's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int,
    message: str | None = None,
    *,
    type_: str | None = None,
    code: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
) -> JSONResponse:
    """Answer an HTTP error exactly like the real API, with Retry-After when given."""
    default_type, default_code, default_message = _ERROR_DEFAULTS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
    )
    body = error_body(
        message or default_message, type_ or default_type, param, code or default_code
    )
    headers = {"x-request-id": request_id()}
    if retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
        headers["retry-after-ms"] = str(round(retry_after * 1000))
    return JSONResponse(body, status_code=status, headers=headers)


def planned_error(error: ErrorPlan) -> JSONResponse:
    """Answer the error a plan scripted."""
    return error_response(
        error.status,
        error.message,
        type_=error.type,
        code=error.code,
        param=error.param,
        retry_after=error.retry_after,
    )


def invalid_request(
    message: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    """Answer a 400 for a request the real API would reject."""
    return error_response(400, message, param=param, code=code)


class StreamCut(Exception):
    """Raised inside a response body to make the server drop the connection mid-response."""
