"""Transcription and speech calls through the chat's provider client, against the fake OpenAI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.raw_http import answer, raw_server
from tests.support.voice import sha256, wav_seconds
from voicestack.agent.llm import ChatProvider, ProviderError, ProviderSettings
from voicestack.agent.llm_errors import ProviderRole
from voicestack.testing.fake_openai import FakeOpenAI
from voicestack.testing.fake_openai.audio import speech_pcm, wav_bytes
from voicestack.voice.formats import WAV
from voicestack.voice.provider import Synthesizer, Transcriber

pytestmark = pytest.mark.anyio

AUDIO = wav_bytes(speech_pcm("a recording of a few words"), 16_000)


@pytest.fixture
async def provider(fake: FakeOpenAI) -> AsyncIterator[ChatProvider]:
    chat = ChatProvider(ProviderSettings(base_url=fake.api_base, api_key=None, max_retries=1))
    yield chat
    await chat.aclose()


async def test_a_gpt_4o_transcription_sends_the_bytes_and_reports_no_duration(
    fake: FakeOpenAI, provider: ChatProvider
) -> None:
    fake.script({"kind": "transcription", "transcript": "hi there", "expect_sha256": sha256(AUDIO)})

    heard = await Transcriber(provider, "gpt-4o-mini-transcribe").transcribe(
        AUDIO, WAV, "recording", "de"
    )

    assert (heard.text, heard.duration_s) == ("hi there", None)
    [request] = fake.requests("transcription")
    body = request["body"]
    assert {k: body[k] for k in ("model", "response_format", "language")} == {
        "model": "gpt-4o-mini-transcribe",
        "response_format": "json",
        "language": "de",
    }


async def test_a_whisper_transcription_reports_the_duration_it_heard(
    fake: FakeOpenAI, provider: ChatProvider
) -> None:
    heard = await Transcriber(provider, "whisper-1").transcribe(AUDIO, WAV, "recording")

    assert heard.duration_s == wav_seconds(AUDIO)
    assert fake.requests("transcription")[0]["body"]["response_format"] == "verbose_json"


async def test_a_failed_transcription_is_retried_then_described(
    fake: FakeOpenAI, provider: ChatProvider
) -> None:
    fake.script({"kind": "transcription", "error": {"status": 503}, "times": 2})

    with pytest.raises(ProviderError) as failed:
        await Transcriber(provider, "gpt-4o-mini-transcribe").transcribe(AUDIO, WAV, "recording")

    assert failed.value.code == "provider_error"
    assert failed.value.message.startswith("The model provider failed (HTTP 503")
    assert failed.value.message.endswith("after 1 retry.")
    assert len(fake.requests("transcription")) == 2


async def test_a_rejected_model_is_named_in_the_error(
    fake: FakeOpenAI, provider: ChatProvider
) -> None:
    fake.script({"kind": "speech", "error": {"status": 404, "message": "no such model"}})

    with pytest.raises(ProviderError) as failed:
        await Synthesizer(provider, "tts-nope", "alloy", "wav").synthesize("Hello.")

    assert failed.value.code == "provider_bad_request"
    assert "Check the model name 'tts-nope'" in failed.value.message


async def test_speech_comes_back_as_audio_bytes(fake: FakeOpenAI, provider: ChatProvider) -> None:
    audio = await Synthesizer(provider, "gpt-4o-mini-tts", "verse", "wav").synthesize("Hello.")

    assert audio[:4] == b"RIFF"
    assert audio[8:12] == b"WAVE"
    [request] = fake.requests("speech")
    assert request["body"] == {
        "model": "gpt-4o-mini-tts",
        "voice": "verse",
        "input": "Hello.",
        "response_format": "wav",
    }


async def test_without_a_provider_nothing_is_called() -> None:
    provider = ChatProvider(ProviderSettings(base_url=None, api_key=None))

    with pytest.raises(ProviderError) as failed:
        await Transcriber(provider, "gpt-4o-mini-transcribe").transcribe(AUDIO, WAV, "recording")

    assert failed.value.code == "provider_not_configured"


TRANSCRIPTION = ProviderRole(name="transcription")


NOT_A_TRANSCRIPTION = "instead of a transcription. Check the base URL: an OpenAI-compatible API's"


@pytest.mark.parametrize(
    ("reply", "code", "said"),
    [
        pytest.param(
            answer("200 OK", "text/html", b"<p>Sign in</p>"),
            "provider_bad_response",
            f"answered text/html {NOT_A_TRANSCRIPTION} usually ends in /v1.",
            id="page",
        ),
        pytest.param(
            answer("200 OK", "application/json", b'{"id": 1}'),
            "provider_bad_response",
            f"answered JSON with no text {NOT_A_TRANSCRIPTION} usually ends in /v1.",
            id="json",
        ),
        pytest.param(
            answer("200 OK", "", b"hi"),
            "provider_bad_response",
            f"answered no content type {NOT_A_TRANSCRIPTION} usually ends in /v1.",
            id="untyped",
        ),
        pytest.param(
            # whisper.cpp's server answers a failure with 200 and {"error": "..."}.
            answer("200 OK", "application/json", b'{"error": "failed to read WAV file"}'),
            "provider_error",
            "failed: failed to read WAV file.",
            id="error-in-200",
        ),
    ],
)
async def test_a_transcription_that_is_not_one_says_what_came(
    reply: bytes, code: str, said: str
) -> None:
    async with raw_server(reply) as (base, asked):
        settings = ProviderSettings(base_url=base, api_key=None, max_retries=1, role=TRANSCRIPTION)
        provider = ChatProvider(settings)
        try:
            with pytest.raises(ProviderError) as failed:
                await Transcriber(provider, "whisper-1").transcribe(AUDIO, WAV, "recording")
        finally:
            await provider.aclose()
    assert (failed.value.code, failed.value.message, len(asked)) == (
        code,
        f"The transcription provider at {base} {said}",
        1,  # not retried
    )


@pytest.mark.parametrize(
    ("reply", "heard"),
    [
        pytest.param(answer("200 OK", "text/plain", b"hi there"), "hi there", id="plain"),
        pytest.param(
            answer("200 OK", "text/plain; charset=utf-8", b'{"text": "hi there"}'),
            "hi there",
            id="json-labelled-plain",
        ),
        pytest.param(answer("200 OK", "text/plain", b"2024"), "2024", id="plain-number"),
        pytest.param(answer("200 OK", "text/plain", b'"Yes."'), '"Yes."', id="plain-quoted"),
        pytest.param(answer("200 OK", "text/json", b'{"text": "hi"}'), "hi", id="text-json"),
    ],
)
async def test_a_transcript_sent_as_plain_text_is_read(reply: bytes, heard: str) -> None:
    async with raw_server(reply) as (base, _):
        provider = ChatProvider(ProviderSettings(base_url=base, api_key=None))
        try:
            transcript = await Transcriber(provider, "whisper-1").transcribe(AUDIO, WAV, "rec")
        finally:
            await provider.aclose()
    assert (transcript.text, transcript.duration_s) == (heard, None)


@pytest.mark.parametrize("audio_format", ["mp3", "pcm"])
@pytest.mark.parametrize(
    ("reply", "answered"),
    [
        pytest.param(answer("200 OK", "text/html", b"<p>Sign in</p>"), "text/html", id="page"),
        pytest.param(answer("200 OK", "application/json", b"{}"), "application/json", id="json"),
        pytest.param(answer("200 OK", "audio/mpeg", b""), "an empty body", id="empty"),
    ],
)
async def test_speech_that_is_not_audio_says_what_came(
    reply: bytes, answered: str, audio_format: str
) -> None:
    async with raw_server(reply) as (base, asked):
        provider = ChatProvider(ProviderSettings(base_url=base, api_key=None, max_retries=1))
        try:
            with pytest.raises(ProviderError) as failed:
                await Synthesizer(provider, "tts-1", "alloy", audio_format).synthesize("Hello.")
        finally:
            await provider.aclose()
    assert (failed.value.code, failed.value.message, len(asked)) == (
        "provider_bad_response",
        f"The model provider at {base} answered {answered} instead of audio. Check the base URL:"
        " an OpenAI-compatible API's usually ends in /v1.",
        1,
    )
