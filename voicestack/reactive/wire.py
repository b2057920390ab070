"""The bytes on the wire: SSE events, and the HTTP/1.1 chunks that carry them on direct writes.

Every event a stream sends is encoded here, once, and the same bytes go to every subscriber.
The SSE framing is sse-starlette's encoder, so none is written by hand (docs/architecture.md has
the decision and its cost). Direct writes bypass the ASGI server, so they carry their own chunk
framing; a ChannelResponse allows them only on a chunked HTTP/1.1 response
(voicestack/http/sse.py).
"""

from __future__ import annotations

from sse_starlette.event import ServerSentEvent

PING = ServerSentEvent(comment="ping", sep="\n").encode()
# The zero-length chunk that ends a chunked HTTP/1.1 response.
END_OF_CHUNKS = b"0\r\n\r\n"


def encode_event(event: bytes, event_id: int | None, data: bytes) -> bytes:
    """One SSE event (`id:`, `event:`, `data:`), with no `id:` line when `event_id` is None;
    `data` is JSON, which never contains a newline."""
    sse_id = None if event_id is None else str(event_id)
    return ServerSentEvent(data=data.decode(), event=event.decode(), id=sse_id, sep="\n").encode()


def http_chunk(body: bytes) -> bytes:
    """`body` as one HTTP/1.1 chunk, ready to write straight to a chunked response."""
    return b"%x\r\n%s\r\n" % (len(body), body)
