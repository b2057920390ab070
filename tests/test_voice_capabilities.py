"""A provider per capability: chat, transcription and speech each from a server of its own, with
a key of its own, falling back to the chat's; and speech asked for as raw PCM, stored as WAV.

Real server processes talk to two fake OpenAI-compatible servers: `fake` stands for the chat's
(Ollama, vLLM), `audio` for the audio server's (speaches, Kokoro-FastAPI).
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.agent import (
    StartAgentServer,
    Threads,
    ended,
    feed,
    marker,
    read_until,
    snapshot,
)
from tests.support.server import ServerProcess, free_port
from tests.support.voice import (
    Posted,
    Recordings,
    post_form,
    posted,
    requires_espeak,
    speech_events,
    stored_files,
)
from voicestack.agent.llm import (
    NOT_CONFIGURED_MESSAGE,
    ChatProvider,
    ProviderError,
    ProviderRole,
    ProviderSettings,
)
from voicestack.config import Settings
from voicestack.http.redact import MASK, RedactSecrets, install_log_redaction
from voicestack.testing.fake_openai import FakeOpenAI
from voicestack.testing.fake_openai.audio import SPEECH_SECONDS_PER_CHAR, speech_pcm, wav_bytes
from voicestack.voice.capabilities import speech_provider_settings, transcription_provider_settings
from voicestack.voice.pcm import Pcm
from voicestack.voice.provider import Synthesizer

pytestmark = pytest.mark.anyio

# Keys of no recognisable shape, as a self-hosted server's keys may be: only the configured
# values themselves can tell the log what to mask.
CHAT_KEY = "chat-" + secrets.token_hex(12)
TRANSCRIBE_KEY = "stt-" + secrets.token_hex(12)
SPEECH_KEY = "tts-" + secrets.token_hex(12)
SENTENCES = ["It is sunny.", "Enjoy your day."]
ANSWER = " ".join(SENTENCES)


@pytest.fixture(scope="module")
def audio_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def audio(audio_server: FakeOpenAI) -> FakeOpenAI:
    """The audio server, with no plans and no logged requests left from earlier tests."""
    audio_server.reset()
    return audio_server


def bearer(request: dict[str, object]) -> object:
    headers = request["headers"]
    assert isinstance(headers, dict)
    return headers.get("authorization")


@dataclass(frozen=True)
class SpokenTurn:
    """A recording posted with speak=true, followed to the reply's end."""

    thread_id: str
    posted: Posted
    spoken: list[dict[str, Any]]
    status: str


async def spoken_turn(
    server: ServerProcess, transcriber: FakeOpenAI, chat: FakeOpenAI, recordings: Recordings
) -> SpokenTurn:
    """Post a recording with speak=true, its transcript scripted on `transcriber` and the answer
    on `chat`, and follow the reply to its final status."""
    mark = marker()
    transcriber.script({"kind": "transcription", "transcript": f"Weather {mark}?"})
    chat.script({"match": mark, "text": ANSWER})
    async with server.client() as client:
        thread_id = await Threads(client).create()
        async with feed(client, thread_id) as stream:
            await snapshot(stream)
            turn = posted(await post_form(client, thread_id, recordings.audio("wav"), speak="true"))
            events = await read_until(stream, ended(turn.reply_id), timeout=15)
    return SpokenTurn(thread_id, turn, speech_events(events), events[-1].json["status"])


@requires_espeak
async def test_each_capability_goes_to_its_own_provider_with_its_own_key(
    fake: FakeOpenAI,
    audio: FakeOpenAI,
    start_agent_server: StartAgentServer,
    recordings: Recordings,
) -> None:
    server = start_agent_server(
        fake.api_base,
        *("--openai-api-key", CHAT_KEY),
        *("--transcribe-base-url", audio.api_base, "--transcribe-api-key", TRANSCRIBE_KEY),
        *("--speech-base-url", audio.api_base, "--speech-api-key", SPEECH_KEY),
    )

    turn = await spoken_turn(server, audio, fake, recordings)

    assert ([s["text"] for s in turn.spoken], turn.status) == (SENTENCES, "complete")
    # The shared chat fake may also log a late request of an earlier test's server (no key).
    ours = [r for r in fake.requests() if turn.posted.transcript in json.dumps(r["body"])]
    assert [bearer(r) for r in ours] == [f"Bearer {CHAT_KEY}"]
    assert not {TRANSCRIBE_KEY, SPEECH_KEY} & {bearer(r)[7:] for r in fake.requests()}
    assert [(r["kind"], bearer(r)) for r in audio.requests()] == [
        ("transcription", f"Bearer {TRANSCRIBE_KEY}"),
        ("speech", f"Bearer {SPEECH_KEY}"),
        ("speech", f"Bearer {SPEECH_KEY}"),
    ]
    log = server.log()
    assert [key for key in (CHAT_KEY, TRANSCRIBE_KEY, SPEECH_KEY) if key in log] == []


@requires_espeak
async def test_unset_audio_providers_are_the_chats_server_and_key(
    fake: FakeOpenAI, start_agent_server: StartAgentServer, recordings: Recordings
) -> None:
    server = start_agent_server(fake.api_base, "--openai-api-key", CHAT_KEY)

    turn = await spoken_turn(server, fake, fake, recordings)

    assert (len(turn.spoken), turn.status) == (2, "complete")
    assert [(r["kind"], bearer(r)) for r in fake.requests()] == [
        ("transcription", f"Bearer {CHAT_KEY}"),
        ("chat", f"Bearer {CHAT_KEY}"),
        ("speech", f"Bearer {CHAT_KEY}"),
        ("speech", f"Bearer {CHAT_KEY}"),
    ]


@requires_espeak
async def test_with_only_an_audio_server_voice_is_heard_and_the_reply_has_no_chat_provider(
    audio: FakeOpenAI, start_agent_server: StartAgentServer, recordings: Recordings
) -> None:
    server = start_agent_server(
        None, "--transcribe-base-url", audio.api_base, "--speech-base-url", audio.api_base
    )

    turn = await spoken_turn(server, audio, audio, recordings)

    async with server.client() as client:
        messages = (await Threads(client).get(turn.thread_id))["messages"]
    assert [(m["role"], m["status"], m["error"]) for m in messages] == [
        ("user", "complete", None),
        (
            "assistant",
            "failed",
            {"code": "provider_not_configured", "message": NOT_CONFIGURED_MESSAGE},
        ),
    ]
    assert messages[0]["text"] == turn.posted.transcript
    assert [(r["kind"], bearer(r)) for r in audio.requests()] == [
        ("transcription", "Bearer no-key-needed")
    ]


@requires_espeak
async def test_speech_asked_for_as_pcm_is_stored_as_wav_of_the_same_samples(
    fake: FakeOpenAI,
    audio: FakeOpenAI,
    start_agent_server: StartAgentServer,
    recordings: Recordings,
) -> None:
    server = start_agent_server(
        fake.api_base, "--speech-base-url", audio.api_base, "--speech-format", "pcm"
    )

    turn = await spoken_turn(server, fake, fake, recordings)

    assert turn.status == "complete"
    assert [r["body"]["response_format"] for r in audio.requests("speech")] == ["pcm", "pcm"]
    seconds = [round(len(s) * SPEECH_SECONDS_PER_CHAR, 3) for s in SENTENCES]
    speech = [f for f in stored_files(server.db_path, turn.thread_id) if f["kind"] == "speech"]
    assert [(f["content_type"], f["duration_s"]) for f in speech] == [
        ("audio/wav", length) for length in seconds
    ]
    async with server.client() as client:
        for said, sentence in zip(turn.spoken, SENTENCES, strict=True):
            clip = (await client.get(f"/api/files/{said['fileId']}")).content
            with wave.open(io.BytesIO(clip)) as wav:
                shape = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
                samples = wav.readframes(wav.getnframes())
            assert (shape, samples) == ((1, 2, 24_000), speech_pcm(sentence))


@requires_espeak
async def test_a_reply_whose_speech_provider_is_unreachable_says_which_one_in_the_log(
    fake: FakeOpenAI, start_agent_server: StartAgentServer, recordings: Recordings
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    server = start_agent_server(fake.api_base, "--speech-base-url", closed)

    turn = await spoken_turn(server, fake, fake, recordings)

    assert (turn.spoken, turn.status) == ([], "complete")
    unreachable = (
        f"could not speak a sentence of reply {turn.posted.reply_id} (provider_unreachable):"
        f" Could not connect to the speech provider at {closed} after 2 retries (Connection"
        " refused). Check that it is running and that the base URL is right."
    )
    assert server.log().count(unreachable) == len(SENTENCES)


async def test_synthesized_pcm_comes_raw_at_24_khz(audio: FakeOpenAI) -> None:
    provider = ChatProvider(ProviderSettings(base_url=audio.api_base, api_key=SPEECH_KEY))
    try:
        pcm = await Synthesizer(provider, "tts-1", "alloy", "mp3").synthesize_pcm("Hello there.")
    finally:
        await provider.aclose()

    assert pcm == Pcm(speech_pcm("Hello there."), 24_000)
    assert pcm.duration_s == 12 * SPEECH_SECONDS_PER_CHAR
    assert audio.requests("speech")[0]["body"]["response_format"] == "pcm"


def test_a_provider_that_answers_pcm_as_wav_is_read_by_its_header() -> None:
    samples = speech_pcm("Hi.")

    assert Pcm.answered(wav_bytes(samples, 22_050)) == Pcm(samples, 22_050)
    assert Pcm.answered(samples) == Pcm(samples, 24_000)


async def test_an_unreachable_speech_provider_is_named_in_the_error() -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    settings = speech_provider_settings(
        Settings(speech_base_url=closed, provider_retries=0)  # type: ignore[call-arg]
    )
    provider = ChatProvider(settings)
    try:
        with pytest.raises(ProviderError) as failed:
            await Synthesizer(provider, "tts-1", "alloy", "pcm").synthesize("Hello.")
    finally:
        await provider.aclose()

    assert (failed.value.code, failed.value.message) == (
        "provider_unreachable",
        f"Could not connect to the speech provider at {closed} (Connection refused). Check"
        " that it is running and that the base URL is right.",
    )


def test_the_chats_key_goes_only_to_the_chats_server() -> None:
    chat = {"openai_base_url": "http://chat/v1", "openai_api_key": CHAT_KEY}
    own = Settings(**chat, transcribe_base_url="http://stt/v1")  # type: ignore[arg-type]
    shared = Settings(**chat)  # type: ignore[arg-type]

    assert transcription_provider_settings(own) == ProviderSettings(
        base_url="http://stt/v1",
        api_key=None,
        model="gpt-4o-mini-transcribe",
        role=ProviderRole(
            "transcription",
            "--transcribe-api-key (VOICESTACK_TRANSCRIBE_API_KEY)",
            "No transcription provider is configured: set --transcribe-base-url, or"
            " OPENAI_API_KEY or --openai-base-url, which it defaults to.",
        ),
    )
    defaulted = speech_provider_settings(shared)
    assert (defaulted.base_url, defaulted.api_key, defaulted.role.key_setting) == (
        "http://chat/v1",
        CHAT_KEY,
        "OPENAI_API_KEY, or --speech-api-key (VOICESTACK_SPEECH_API_KEY)",
    )


def test_configured_keys_of_any_shape_are_masked_in_the_log() -> None:
    settings = Settings(speech_api_key=SPEECH_KEY)  # type: ignore[call-arg]
    install_log_redaction(settings.secret_values())
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, "key %s", (SPEECH_KEY,), None)

    RedactSecrets().filter(record)

    assert record.getMessage() == f"key {MASK}"
