"""Relay mode's audio and provider session without a server: which format the provider hears
for each client, the session.update in the GA and beta shapes, the resampler that holds no
audio back yet low-passes, and which key the provider gets."""

from __future__ import annotations

import numpy as np
import pytest

from voicestack.agent.agents import AgentProfile
from voicestack.agent.handoff import AgentTools
from voicestack.config import load_settings
from voicestack.voice.realtime import codec
from voicestack.voice.realtime.wire import Start
from voicestack.voice.relay.audio import InboundAudio, ReplyAudio
from voicestack.voice.relay.records import VoiceAgent
from voicestack.voice.relay.resample import PolyphaseResampler
from voicestack.voice.relay.session_config import (
    ProviderAudio,
    RelaySettings,
    protocol_of,
    provider_audio,
    session_update,
)

AGENT = AgentProfile("assistant", "Be brief.", "gpt-4o-mini", (), "ash", None, 8, (), "")
SETTINGS = RelaySettings("ws://x/rt", None, "gpt-realtime", 5.0, "whisper-1", 400)
PHONE = Start(8000, "mulaw")
PCMU = ProviderAudio("mulaw", 8000)
PCM24 = ProviderAudio("pcm16", 24000)


def test_a_phone_is_heard_as_mulaw_and_every_other_client_as_24_khz_pcm() -> None:
    assert provider_audio(PHONE) == PCMU
    assert provider_audio(Start(24000, "pcm16")) == PCM24
    assert provider_audio(Start(16000, "pcm16")) == PCM24
    assert provider_audio(Start(8000, "pcm16")) == PCM24
    assert (PCMU.bytes_per_ms, PCM24.bytes_per_ms) == (8.0, 48.0)


def test_mulaw_passes_through_both_ways_and_is_accounted_one_byte_a_sample() -> None:
    frame = bytes(range(160))
    assert InboundAudio(PHONE, PCMU)(frame) == frame
    reply = ReplyAudio(PHONE, PCMU)
    assert reply.convert(frame * 5) == frame * 5
    assert reply.provider_ms == 100.0
    assert [len(piece) for piece in reply.frames(frame * 5)] == [160] * 5


def test_the_session_update_takes_the_ga_shape_with_the_phones_format() -> None:
    update = session_update(VoiceAgent.of(AgentTools(AGENT)), SETTINGS, PCMU)

    session = update["session"]
    assert session["type"] == "realtime"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "ash"}
    pcm = session_update(VoiceAgent.of(AgentTools(AGENT)), SETTINGS, PCM24)["session"]["audio"]
    assert pcm["input"]["format"] == {"type": "audio/pcm", "rate": 24000}


def test_a_beta_provider_gets_the_beta_shape() -> None:
    update = session_update(VoiceAgent.of(AgentTools(AGENT)), SETTINGS, PCMU, "beta")

    assert update["session"] == {
        "modalities": ["audio", "text"],
        "instructions": "Be brief.",
        "voice": "ash",
        "input_audio_format": "g711_ulaw",
        "output_audio_format": "g711_ulaw",
        "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": {
            "type": "server_vad",
            "silence_duration_ms": 400,
            "create_response": True,
            "interrupt_response": True,
        },
        "tools": [],
        "tool_choice": "none",
    }
    beta = session_update(VoiceAgent.of(AgentTools(AGENT)), SETTINGS, PCM24, "beta")["session"]
    assert beta["input_audio_format"] == beta["output_audio_format"] == "pcm16"


def test_the_protocol_is_read_from_the_session_the_provider_created() -> None:
    beta = {"type": "session.created", "session": {"modalities": ["audio"], "voice": "alloy"}}
    ga = {"type": "session.created", "session": {"type": "realtime", "audio": {}}}
    assert protocol_of(beta) == "beta"
    assert protocol_of(ga) == "ga"
    assert protocol_of({"type": "error"}) == "ga"
    assert protocol_of(None) == "ga"


@pytest.mark.parametrize(("source", "target"), [(16000, 24000), (24000, 16000), (8000, 24000)])
def test_the_resampler_holds_nothing_back_and_keeps_the_band(source: int, target: int) -> None:
    resample = PolyphaseResampler(source, target)
    nyquist = min(source, target) / 2
    seconds = np.arange(source) / source
    inside = (8000 * np.sin(2 * np.pi * 0.5 * nyquist * seconds)).astype("<i2").tobytes()
    step = source * 2 // 50  # 20 ms frames

    out = [resample(inside[at : at + step]) for at in range(0, len(inside), step)]

    assert {len(piece) for piece in out} == {target * 2 // 50}
    assert resample.delay_ms < 2.5
    samples = np.frombuffer(b"".join(out), dtype="<i2")[target // 10 :].astype(float)
    assert np.sqrt(np.mean(samples**2)) == pytest.approx(8000 / np.sqrt(2), rel=0.01)


def test_the_resampler_removes_what_the_lower_rate_cannot_carry() -> None:
    resample = PolyphaseResampler(24000, 16000)
    seconds = np.arange(24000) / 24000
    alias = (8000 * np.sin(2 * np.pi * 10000 * seconds)).astype("<i2").tobytes()

    out = np.frombuffer(resample(alias), dtype="<i2")[1600:].astype(float)

    # A 10 kHz tone would fold to 6 kHz at 16 kHz: it is at least 60 dB down instead.
    assert 20 * np.log10(np.sqrt(np.mean(out**2)) / (8000 / np.sqrt(2))) < -60


def test_the_provider_gets_the_realtime_key_else_the_chats(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VOICESTACK_REALTIME_API_KEY", "VOICESTACK_OPENAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    chat_only = load_settings(openai_api_key="sk-chat")
    both = load_settings(openai_api_key="sk-chat", realtime_api_key="sk-rt")

    assert RelaySettings.from_settings(chat_only).api_key == "sk-chat"
    assert RelaySettings.from_settings(both).api_key == "sk-rt"
    assert "sk-rt" in both.secret_values()
    assert "sk-rt" not in repr(both)
    monkeypatch.setenv("VOICESTACK_REALTIME_API_KEY", "sk-env")
    assert RelaySettings.from_settings(load_settings()).api_key == "sk-env"


def test_a_16_khz_mulaw_client_is_decoded_and_resampled() -> None:
    start = Start(16000, "mulaw")
    frame = codec.pcm16_to_mulaw(np.zeros(320, dtype="<i2").tobytes())
    assert len(InboundAudio(start, provider_audio(start))(frame)) == 960
