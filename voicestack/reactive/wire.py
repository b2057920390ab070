"""The bytes on the wire: SSE events, and the HTTP/1.1 chunks that carry them on direct writes.

Every event a stream sends is encoded here, once, and the same bytes go to every subscriber.
Direct writes bypass the ASGI server, so they carry their own chunk framing; a ChannelResponse
allows them only on a chunked HTTP/1.1 response (voicestack/http/sse.py).
"""

from __future__ import annotations

PING = b": ping\n\n"


def encode_event(event: bytes, event_id: int | None, data: bytes) -> bytes:
    """One SSE event, with no `id:` line when `event_id` is None; `data` is JSON, which never
    contains a newline."""
    if event_id is None:
        return b"event: %s\ndata: %s\n\n" % (event, data)
    return b"event: %s\nid: %d\ndata: %s\n\n" % (event, event_id, data)


def http_chunk(body: bytes) -> bytes:
    """`body` as one HTTP/1.1 chunk, ready to write straight to a chunked response."""
    return b"%x\r\n%s\r\n" % (len(body), body)
