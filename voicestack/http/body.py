"""Reading request bodies and query parameters as JSON, with size limits and exact errors."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import ClientDisconnect, Request

from voicestack.echo import echoed
from voicestack.http.errors import ApiError
from voicestack.http.json_checks import MAX_JSON_DEPTH, holds_lone_surrogate, nested_too_deep
from voicestack.http.state import runtime


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


def check_args_size(raw: bytes | str, limit: int, what: str) -> None:
    """Refuse with 413 `args_too_large` when `raw`, arguments as JSON, pass `limit` bytes."""
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
    if size > limit:
        raise ApiError(413, "args_too_large", f"{what} are over the {limit}-byte limit.")


# SQLite stores whole numbers in 64 bits: a bigger one would fail in a query, as a 500.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def parse_int64(text: str) -> int:
    """`text`, ASCII digits with an optional sign and surrounding spaces, as an int; ValueError
    when it is not that, OverflowError when it is outside 64 bits. Safe at any length."""
    stripped = text.strip()
    digits = stripped[1:] if stripped[:1] in ("+", "-") else stripped
    if not (digits.isascii() and digits.isdigit()):  # isdigit alone takes "²", which int() refuses
        raise ValueError(f"{echoed(text, 24)!r} is not a whole number")
    significant = digits.lstrip("0") or "0"
    if len(significant) > 19:  # also keeps int() from its 4,300-digit limit
        raise OverflowError(f"{echoed(text, 24)} is outside the 64-bit range")
    value = -int(significant) if stripped.startswith("-") else int(significant)
    if not INT64_MIN <= value <= INT64_MAX:
        raise OverflowError(f"{echoed(text, 24)} is outside the 64-bit range")
    return value


def _whole_number(text: str) -> int:
    try:
        return parse_int64(text)
    except OverflowError:
        raise ValueError(f"the number {echoed(text, 24)} is outside the 64-bit range") from None


def _finite_number(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {echoed(text, 24)} is too large")
    return value


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")  # Python's json takes NaN; JSON does not


# Built once: json.loads given these hooks builds a new decoder on every call.
_DECODER = json.JSONDecoder(
    parse_int=_whole_number, parse_float=_finite_number, parse_constant=_not_json
)


def parse_json(raw: bytes | str, what: str) -> Any:
    """`raw` parsed as JSON; 400 invalid_json naming `what` when it is not, when it holds a
    number SQLite cannot store (a whole number outside 64 bits, NaN or infinity), when it is
    nested over MAX_JSON_DEPTH deep, or when a string in it holds a lone surrogate."""
    try:
        # Strict decoding: json.loads would let surrogates encoded as UTF-8 bytes through.
        text = raw.decode(json.detect_encoding(raw)) if isinstance(raw, bytes) else raw
        if nested_too_deep(text):
            raise ValueError(f"it is nested over {MAX_JSON_DEPTH} arrays and objects deep")
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _DECODER.decode(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"{what} is not valid JSON: {exc}.") from None
    if holds_lone_surrogate(text, value):
        message = f"{what} is not valid JSON: a string holds a lone surrogate, not a character."
        raise ApiError(400, "invalid_json", message)
    return value


async def read_call_args(request: Request, limit: int) -> Any:
    """The `args` of a function call body `{"args": {...}}`; an empty body means no arguments."""
    raw = await read_limited(request, limit)
    return call_args(raw, runtime(request).settings.max_args_bytes)


def call_args(raw: bytes, max_args_bytes: int) -> Any:
    """The `args` of the function call body `raw` (`{"args": {...}}`; empty: no arguments),
    refused with 413 over `max_args_bytes`, 400 when not JSON, 422 when not that shape."""
    # The body is `{"args": ...}`: its size is that of the arguments, give or take 10 bytes.
    check_args_size(raw, max_args_bytes, "The arguments")
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


def json_object(raw: bytes) -> dict[str, Any]:
    """The request body `raw` as a JSON object (empty: `{}`); 400 when it is not JSON, 422 when
    it is not an object."""
    if not raw.strip():
        return {}
    body = parse_json(raw, "The request body")
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_args", "The body must be a JSON object.")
    return body
