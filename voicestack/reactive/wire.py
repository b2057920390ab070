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
    `data` is UTF-8 JSON."""
    if b"\n" in data or b"\r" in data:
        # Compact JSON never holds a line break; anything else is split into `data:` lines.
        sse_id = None if event_id is None else str(event_id)
        text = data.decode()
        return ServerSentEvent(data=text, event=event.decode(), id=sse_id, sep="\n").encode()
    # Formatted directly, byte for byte as above: an event is framed once per commit on the
    # path from a write to its watchers.
    if event_id is None:
        return b"event: %s\ndata: %s\n\n" % (event, data)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, event, data)


def http_chunk(body: bytes) -> bytes:
    """`body` as one HTTP/1.1 chunk, ready to write straight to a chunked response."""
    return b"%x\r\n%s\r\n" % (len(body), body)
