"""An incremental multipart/form-data parser: body chunks in, part events out, nothing buffered.

Starlette's own form parsing (python-multipart) spools whole files before the handler sees a
byte and has no limit on a file's size, so `POST /voice` parses the stream itself: the caller
sees every piece of a file part as it arrives and can refuse an upload the moment it is too big.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

MAX_HEADER_BYTES = 8192


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


@dataclass(frozen=True, slots=True)
class PartStart:
    """A part begins: its form field name, file name (None for a plain field) and type."""

    name: str
    filename: str | None
    content_type: str | None


@dataclass(frozen=True, slots=True)
class PartData:
    """The next bytes of the current part's body."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part is complete."""


PartEvent = PartStart | PartData | PartEnd


def _header_params(name: str, value: str) -> Message:
    # email.message knows RFC 2045/2231 parameter quoting, which hand parsing would get wrong.
    message = Message()
    message[name] = value
    return message


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a multipart/form-data Content-Type, or None for any other type."""
    header = _header_params("content-type", content_type)
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        return None
    if not 1 <= len(boundary) <= 70:
        return None
    return boundary.encode("latin-1")


def _part_start(head: bytes) -> PartStart:
    headers: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    disposition = _header_params("content-disposition", headers.get("content-disposition", ""))
    field = disposition.get_param("name", header="content-disposition")
    if not isinstance(field, str):
        raise MultipartError("a multipart part has no name in its Content-Disposition")
    return PartStart(field, disposition.get_filename(), headers.get("content-type"))


class MultipartParser:
    """Parses one multipart/form-data body fed in chunks of any size."""

    def __init__(self, boundary: bytes) -> None:
        # Every delimiter is CRLF "--" boundary; a leading CRLF lets the first one match too.
        self._delimiter = b"\r\n--" + boundary
        self._buffer = b"\r\n"
        self._state = "preamble"

    @property
    def done(self) -> bool:
        """True once the closing delimiter has been read."""
        return self._state == "end"

    def feed(self, chunk: bytes) -> list[PartEvent]:
        """Parse the next chunk; returns the events it completes, in order."""
        if self._state == "end":
            return []  # the epilogue after the closing delimiter is ignored
        self._buffer += chunk
        events: list[PartEvent] = []
        while self._step(events):
            pass
        return events

    def close(self) -> None:
        """The body ended: raise MultipartError unless the closing delimiter was seen."""
        if self._state != "end":
            raise MultipartError("the multipart body ended before its closing boundary")

    def _step(self, events: list[PartEvent]) -> bool:
        """Advance through the buffer once; False when more input is needed."""
        if self._state == "preamble":
            return self._find_delimiter(events, keep=False)
        if self._state == "delimiter":
            return self._after_delimiter()
        if self._state == "headers":
            return self._headers(events)
        if self._state == "body":
            return self._find_delimiter(events, keep=True)
        return False

    def _find_delimiter(self, events: list[PartEvent], *, keep: bool) -> bool:
        at = self._buffer.find(self._delimiter)
        if at < 0:
            # Hold back what could be the start of a delimiter split across chunks.
            safe = max(0, len(self._buffer) - len(self._delimiter) + 1)
            if keep and safe:
                events.append(PartData(self._buffer[:safe]))
            self._buffer = self._buffer[safe:]
            return False
        if keep:
            if at:
                events.append(PartData(self._buffer[:at]))
            events.append(PartEnd())
        self._buffer = self._buffer[at + len(self._delimiter) :]
        self._state = "delimiter"
        return True

    def _after_delimiter(self) -> bool:
        if len(self._buffer) < 2:
            return False
        if self._buffer.startswith(b"--"):
            self._state, self._buffer = "end", b""
            return False
        line_end = self._buffer.find(b"\r\n")
        if line_end < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise MultipartError("a multipart delimiter line is too long")
            return False
        if self._buffer[:line_end].strip(b" \t"):  # only transport padding may follow
            raise MultipartError("a multipart delimiter is followed by something else")
        self._buffer = self._buffer[line_end + 2 :]
        self._state = "headers"
        return True

    def _headers(self, events: list[PartEvent]) -> bool:
        if self._buffer.startswith(b"\r\n"):  # a part without headers
            head_end, skip = 0, 2
        else:
            head_end, skip = self._buffer.find(b"\r\n\r\n"), 4
        if head_end < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise MultipartError("a multipart part's headers are too long")
            return False
        events.append(_part_start(self._buffer[:head_end]))
        self._buffer = self._buffer[head_end + skip :]
        self._state = "body"
        return True
