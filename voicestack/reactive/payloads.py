"""What a query subscription sends: its value serialized once at a version, or its error.

The hub builds one per re-run query and hands the same object to every subscriber of it, so
encoding a value costs once per commit, not once per connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from voicestack import jsoncodec
from voicestack.reactive.wire import encode_event, http_chunk


@dataclass(eq=False, slots=True)
class Payload:
    """A query value serialized once, at a version, shared by every subscriber it goes to."""

    value_json: bytes
    version: int
    _single: bytes | None = field(default=None, repr=False)
    _frame: bytes | None = field(default=None, repr=False)

    def single_frame(self) -> bytes:
        """`single_event()` as one HTTP/1.1 chunk, for direct writes to a chunked response."""
        if self._frame is None:
            self._frame = http_chunk(self.single_event())
        return self._frame

    def single_event(self) -> bytes:
        """The SSE `value` event of a one-subscription stream (built once, then shared)."""
        if self._single is None:
            self._single = encode_event(
                b"value",
                self.version,
                b'{"value":%s,"version":%d}' % (self.value_json, self.version),
            )
        return self._single


@dataclass(eq=False, slots=True)
class ErrorPayload:
    """A query that failed on re-run: its error, at a version."""

    code: str
    message: str
    version: int
    status: int = 400
    # The caller lost access to what the query reads: this error is the stream's last event.
    final: bool = False

    def data(self, sub_id: str | None) -> bytes:
        """The `error` event's JSON data, naming the subscription on a multi stream."""
        body: dict[str, object] = {
            "error": {"code": self.code, "message": self.message},
            "version": self.version,
        }
        if sub_id is not None:
            body = {"id": sub_id, **body}
        return jsoncodec.dumps(body)
