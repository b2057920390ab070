"""Relay mode on a phone call: the caller's 8 kHz μ-law goes to the provider as `audio/pcmu`
and the provider's comes back to the caller, byte for byte both ways (nothing is resampled or
transcoded), over the real webhook and Media Streams socket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.agent import Threads
from tests.support.relay import client_events, relay_server
from tests.support.server import ServerProcess
from tests.support.twilio import new_call_sid, phone_call, settled, spoken_mulaw, stream_token
from tests.support.twilio import silence as mulaw_silence
from tests.support.voice import requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI
from voicestack.testing.fake_openai.realtime_audio import encode, reply_audio

pytestmark = [pytest.mark.anyio, requires_espeak, relay_server]

ANSWER = "It is sunny."
ANSWER_MS = 1200


async def test_a_phone_calls_mulaw_passes_through_to_the_provider_and_back(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess, tmp_path: Path
) -> None:
    fake.realtime.script(
        {"turns": ["What is the weather"], "responses": [{"text": ANSWER, "audio_ms": ANSWER_MS}]}
    )
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    said = mulaw_silence(300) + spoken_mulaw(tmp_path, "What is the weather?") + mulaw_silence(1000)

    async with phone_call(server) as call:
        await call.start(token, call_sid)
        await call.say(said)
        async with asyncio.timeout(20):
            while len(call.audio) < ANSWER_MS * 8:
                await asyncio.sleep(0.05)
        thread = await settled(threads, call_sid, 2)
        await call.send("stop", streamSid=call.stream_sid, stop={"callSid": call_sid})
        assert await call.closing() == (1000, "call_ended")

    (update,) = client_events(fake, "session.update")
    audio = update["session"]["audio"]
    assert audio["input"]["format"] == {"type": "audio/pcmu"}
    assert audio["output"]["format"] == {"type": "audio/pcmu"}
    # In: every byte the caller said, one byte a sample (24 kHz PCM would be six).
    appended = client_events(fake, "input_audio_buffer.append")
    assert sum(event["audio"]["bytes"] for event in appended) == len(said)
    # Out: the caller heard exactly the provider's μ-law.
    spoken = encode(reply_audio(ANSWER, ANSWER_MS, "tone", 8000), "ulaw")
    assert bytes(call.audio) == spoken
    texts = [(m["role"], m["text"], m["status"]) for m in thread["messages"]]
    assert texts == [("user", "What is the weather", "complete"), ("assistant", ANSWER, "complete")]
    # The metrics are saved once the reply has played out, or at the hang-up.
    async with asyncio.timeout(10):
        while (voice := (await settled(threads, call_sid, 2))["messages"][1]["voice"]) is None:
            await asyncio.sleep(0.05)
    assert voice["audioOutSeconds"] == pytest.approx(1.2, abs=0.01)
