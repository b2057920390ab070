"""The fake OpenAI server's audio routes with the real openai client: transcription, speech."""

from __future__ import annotations

import hashlib
import io
import wave

import openai
import pytest

from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio


def wav(seconds: float, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(range(256)) * int(seconds * rate * 2 / 256))
    return buffer.getvalue()


async def test_transcription_checks_the_uploaded_bytes(
    openai_client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    audio = wav(0.5)
    digest = hashlib.sha256(audio).hexdigest()
    fake.script(
        {"transcript": "turn on the lights", "expect_sha256": digest},
        {"transcript": "never served", "expect_sha256": "0" * 64},
    )

    ok = await openai_client.audio.transcriptions.create(
        model="whisper-1", file=("clip.wav", audio, "audio/wav"), language="en"
    )
    assert ok.text == "turn on the lights"
    with pytest.raises(openai.BadRequestError) as caught:
        await openai_client.audio.transcriptions.create(model="whisper-1", file=("clip.wav", audio))
    assert caught.value.param == "file"

    log = fake.requests("transcription")
    assert log[0]["body"]["file"]["sha256"] == digest
    assert log[0]["body"]["file"]["bytes"] == len(audio)
    assert log[0]["body"]["language"] == "en"
    assert log[0]["path"] == "/v1/audio/transcriptions"


async def test_transcription_defaults_and_text_format(openai_client: openai.AsyncOpenAI) -> None:
    default = await openai_client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", wav(0.1))
    )
    text = await openai_client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", wav(0.1)), response_format="text"
    )

    assert default.text == "hello from the fake transcriber"
    assert text == "hello from the fake transcriber"


async def test_transcription_errors_are_scripted_like_chat(
    openai_client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    fake.script({"kind": "transcription", "error": {"status": 429, "retry_after": 1}})

    with pytest.raises(openai.RateLimitError):
        await openai_client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(0.1)))


async def test_speech_returns_playable_wav(openai_client: openai.AsyncOpenAI) -> None:
    short = await openai_client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hi.", response_format="wav"
    )
    long = await openai_client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hello there, this is a longer sentence."
    )

    assert short.content.startswith(b"RIFF")
    assert long.content.startswith(b"RIFF")
    with wave.open(io.BytesIO(long.content)) as audio:
        assert (audio.getnchannels(), audio.getsampwidth()) == (1, 2)
        assert audio.getnframes() > 0
    assert len(long.content) > len(short.content)
