"""SSE events are framed directly (voicestack/reactive/wire.py), byte for byte as the SSE
library frames them, line breaks in the data included."""

from __future__ import annotations

import pytest
from sse_starlette.event import ServerSentEvent

from voicestack import jsoncodec
from voicestack.reactive.wire import encode_event

DATA = [
    b'{"a":1}',
    jsoncodec.dumps({"text": "héllo \u2028 wörld ✓", "n": [1, 2.5, None]}),
    b'{"a":"two\nlines"}',
    b"one\r\ntwo\rthree\nfour",
]


@pytest.mark.parametrize("event_id", [None, 0, 7, 2**40])
@pytest.mark.parametrize("data", DATA)
def test_an_event_is_framed_as_the_sse_library_frames_it(event_id: int | None, data: bytes) -> None:
    sse_id = None if event_id is None else str(event_id)
    expected = ServerSentEvent(data=data.decode(), event="message", id=sse_id, sep="\n").encode()
    assert encode_event(b"message", event_id, data) == expected
