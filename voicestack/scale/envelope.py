"""HTTP requests and responses as NATS messages: a JSON head and the raw body, length-prefixed.

An edge forwards a request as it came (method, path, query, headers, the client's address) and
the primary answers with the response its own application made, so both sides speak the same
public API byte for byte.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

from voicestack import jsoncodec

_HEAD_SIZE = struct.Struct(">I")
Headers = list[tuple[bytes, bytes]]


def _pack(head: dict[str, object], body: bytes) -> bytes:
    encoded = jsoncodec.dumps(head)
    return _HEAD_SIZE.pack(len(encoded)) + encoded + body


def _unpack(data: bytes) -> tuple[dict[str, object], bytes]:
    if len(data) < _HEAD_SIZE.size:
        raise ValueError("not an envelope: too short")
    (size,) = _HEAD_SIZE.unpack_from(data)
    head = json.loads(data[_HEAD_SIZE.size : _HEAD_SIZE.size + size])
    if not isinstance(head, dict):
        raise ValueError("not an envelope: its head is not an object")
    return head, data[_HEAD_SIZE.size + size :]


def _headers_out(headers: Headers) -> list[list[str]]:
    return [[name.decode("latin-1"), value.decode("latin-1")] for name, value in headers]


def _headers_in(raw: object) -> Headers:
    if not isinstance(raw, list):
        raise ValueError("not an envelope: headers are not a list")
    return [(str(n).encode("latin-1"), str(v).encode("latin-1")) for n, v in raw]


@dataclass(slots=True)
class RequestEnvelope:
    """One HTTP request, as an edge received it."""

    method: str
    path: str
    query_string: bytes
    headers: Headers
    body: bytes = b""
    client: tuple[str, int] | None = None
    # For a stream: the subject its events are published to (for a call: where a response
    # too large for one message is sent, in parts).
    stream_subject: str | None = None
    scheme: str = "http"
    # A body too large for one message stays on the edge: where the primary reads it in parts,
    # under which id, and its size (voicestack/scale/link.py).
    body_parts: tuple[str, str, int] | None = None

    def encode(self) -> bytes:
        """The envelope as one NATS payload."""
        head: dict[str, object] = {
            "m": self.method,
            "p": self.path,
            "q": self.query_string.decode("latin-1"),
            "h": _headers_out(self.headers),
            "c": list(self.client) if self.client else None,
            "s": self.stream_subject,
            "x": self.scheme,
            "b": list(self.body_parts) if self.body_parts else None,
        }
        return _pack(head, self.body)

    @classmethod
    def decode(cls, data: bytes) -> RequestEnvelope:
        """The envelope in a NATS payload; ValueError when it is not one."""
        head, body = _unpack(data)
        client = head.get("c")
        subject = head.get("s")
        parts = head.get("b")
        return cls(
            method=str(head["m"]),
            path=str(head["p"]),
            query_string=str(head.get("q") or "").encode("latin-1"),
            headers=_headers_in(head.get("h", [])),
            body=body,
            client=(str(client[0]), int(client[1])) if isinstance(client, list) else None,
            stream_subject=str(subject) if isinstance(subject, str) else None,
            scheme="https" if head.get("x") == "https" else "http",
            body_parts=(str(parts[0]), str(parts[1]), int(parts[2]))
            if isinstance(parts, list)
            else None,
        )


@dataclass(slots=True)
class ResponseEnvelope:
    """One HTTP response, as the primary's application made it."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    # Set on the answer to a stream's opening: the primary process that holds it.
    primary: str | None = None
    # The body did not fit one message: it was published in parts to the call's stream subject.
    streamed: bool = False

    def encode(self) -> bytes:
        """The envelope as one NATS payload."""
        head = {
            "s": self.status,
            "h": _headers_out(self.headers),
            "p": self.primary,
            "b": self.streamed,
        }
        return _pack(head, self.body)

    @classmethod
    def decode(cls, data: bytes) -> ResponseEnvelope:
        """The envelope in a NATS payload; ValueError when it is not one."""
        head, body = _unpack(data)
        primary = head.get("p")
        return cls(
            status=int(str(head["s"])),
            headers=_headers_in(head.get("h", [])),
            body=body,
            primary=str(primary) if isinstance(primary, str) else None,
            streamed=head.get("b") is True,
        )

    @property
    def ok(self) -> bool:
        """Whether a stream's opening was answered with the stream."""
        return self.status == 200

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (lower case), if any."""
        return next((v for n, v in self.headers if n.lower() == name), None)
