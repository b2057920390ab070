"""Reading request bodies and query parameters as JSON, with size limits and exact errors."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

from voicestack.http.errors import ApiError


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"The body is over the {limit}-byte limit.")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body_too_large", f"The body is over the {limit}-byte limit.")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "The client went away mid-body.") from None
    return b"".join(chunks)


def parse_json(raw: bytes | str, what: str) -> Any:
    """`raw` parsed as JSON; 400 invalid_json naming `what` when it is not."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"{what} is not valid JSON: {exc}.") from None


async def read_call_args(request: Request, limit: int) -> Any:
    """The `args` of a function call body `{"args": {...}}`; an empty body means no arguments."""
    raw = await read_limited(request, limit)
    if not raw.strip():
        return {}
    body = parse_json(raw, "The request body")
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_args", 'The body must be a JSON object: {"args": {...}}.')
    unknown = sorted(set(body) - {"args"})
    if unknown:
        raise ApiError(
            422,
            "invalid_args",
            f'Unexpected key(s) {unknown} in the body: send {{"args": {{...}}}}.',
        )
    args = body.get("args", {})
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise ApiError(422, "invalid_args", '"args" must be a JSON object.')
    return args
