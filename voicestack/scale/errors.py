"""The error responses edges and primaries make themselves, in the public error shape."""

from __future__ import annotations

from voicestack import jsoncodec
from voicestack.scale.envelope import ResponseEnvelope

# How long a client should wait before it tries a write again while the primary is away.
RETRY_AFTER_S = 2


def error_envelope(status: int, code: str, message: str, **extra: object) -> ResponseEnvelope:
    """`{"error": {"code", "message", **extra}}` with `status`; a 503 says when to retry."""
    headers = [(b"content-type", b"application/json")]
    if status == 503:
        headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    body = jsoncodec.dumps({"error": {"code": code, "message": message, **extra}})
    return ResponseEnvelope(status, headers, body)
