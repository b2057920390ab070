"""An edge's own calls to the primary on behalf of a client: a live conversation's records,
asked with the client's credentials (voicestack/scale/edge_voice.py, edge_relay.py)."""

from __future__ import annotations

import dataclasses
import json

from voicestack.functions.errors import FunctionError
from voicestack.scale.edge import Edge
from voicestack.scale.envelope import Headers, RequestEnvelope, ResponseEnvelope
from voicestack.scale.link import PrimaryUnavailable


class PrimaryAway(FunctionError):
    """`primary_unavailable` (503): no primary answered; `undelivered` when the request
    surely reached none (so it can be sent again without being done twice)."""

    def __init__(self, reason: str, undelivered: bool) -> None:
        super().__init__("primary_unavailable", f"The primary is not reachable now: {reason}.", 503)
        self.undelivered = undelivered


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
    `headers`); PrimaryAway when no primary answers."""
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
        raise PrimaryAway(str(exc), exc.undelivered) from None
