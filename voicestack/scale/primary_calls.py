"""An edge's own calls to the primary on behalf of a client: a live conversation's records,
asked with the client's credentials (voicestack/scale/edge_voice.py, edge_relay.py)."""

from __future__ import annotations

import dataclasses
import json

from voicestack.functions.errors import FunctionError
from voicestack.scale.edge import Edge
from voicestack.scale.envelope import Headers, RequestEnvelope, ResponseEnvelope
from voicestack.scale.link import PrimaryUnavailable


def refusal_of(answer: ResponseEnvelope) -> FunctionError:
    """A primary's refusal as the FunctionError a conversation reports to its client."""
    try:
        error = json.loads(answer.body)["error"]
        return FunctionError(str(error["code"]), str(error["message"]), answer.status)
    except (ValueError, KeyError, TypeError):
        return FunctionError("primary_error", f"The primary answered {answer.status}.", 502)


async def call_as(
    edge: Edge,
    credentials: RequestEnvelope,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Headers | None = None,
    timeout: float | None = None,
) -> ResponseEnvelope:
    """The primary's answer to `method path` made with `credentials`' headers (and
    `headers`); FunctionError `primary_unavailable` (503) when no primary answers."""
    request = dataclasses.replace(
        credentials,
        method=method,
        path=path,
        query_string=b"",
        headers=[*credentials.headers, *(headers or [])],
        body=body,
    )
    try:
        return await edge.link.call(request, timeout=timeout)
    except PrimaryUnavailable as exc:
        raise FunctionError(
            "primary_unavailable", f"The primary is not reachable now: {exc}.", 503
        ) from None
