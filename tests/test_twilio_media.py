"""The `media` messages a call's client writes are JSON Twilio reads, whatever the stream's id."""

from __future__ import annotations

import base64
import json

import pytest

from voicestack.voice.telephony.media import CallClient

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "stream_sid", ["MZ0123456789abcdef", 'MZ"quoted\\back\nslash', "MZé✓", "MZ\ud800"]
)
async def test_reply_audio_goes_out_as_one_media_message(stream_sid: str) -> None:
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    async def close(code: int, reason: str) -> None:
        raise AssertionError("the stream was closed")

    client = CallClient(stream_sid, send, close)
    frame = bytes(range(160))
    await client.send_audio(frame)
    assert [json.loads(text) for text in sent] == [
        {
            "event": "media",
            "streamSid": stream_sid,
            "media": {"payload": base64.b64encode(frame).decode()},
        }
    ]
