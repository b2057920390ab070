"""The `session.update` that starts a relayed conversation: the agent's instructions, voice and
tools, the audio formats both ways, input transcription, and the provider's own turn-taking.

The provider hears and speaks the client's own audio when it can, so nothing is converted
either way: a phone call's 8 kHz μ-law goes through as `audio/pcmu` (beta: `g711_ulaw`), and a
24 kHz PCM client's as `audio/pcm`. Any other client speaks to a 24 kHz PCM provider through
the relay's resampler (audio.py); the protocol has no other rates.

The event takes the GA shape (`session.type` "realtime", `audio.input`/`audio.output`) or, for a
provider that speaks the beta protocol, the beta one (`input_audio_format`, `modalities`, ...).
Which one the provider speaks shows in its first event, `session.created` (`protocol_of`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from voicestack.config import Settings
from voicestack.voice.realtime.wire import Start
from voicestack.voice.relay.provider import realtime_url

if TYPE_CHECKING:
    from voicestack.voice.relay.records import VoiceAgent

PROVIDER_RATE = 24000
MULAW_RATE = 8000
Protocol = Literal["ga", "beta"]


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """How every relayed conversation runs (from the server's flags)."""

    url: str | None
    api_key: str | None
    model: str
    timeout_s: float
    transcribe_model: str
    silence_ms: int
    context_messages: int = 50  # earlier messages of the thread a new provider session gets

    @classmethod
    def from_settings(cls, settings: Settings) -> RelaySettings:
        """The --realtime-* flags. The provider gets --realtime-api-key; without it, the chat's
        key only when the URL is the chat provider's own (derived from --openai-base-url): a
        --realtime-url on another host never gets the chat's key, as no other capability's does."""
        secret = settings.realtime_api_key
        if secret is None and settings.realtime_url is None:
            secret = settings.openai_api_key
        return cls(
            url=realtime_url(
                settings.openai_base_url, settings.realtime_url, settings.realtime_model
            ),
            api_key=secret.get_secret_value() if secret else None,
            model=settings.realtime_model,
            timeout_s=settings.realtime_timeout_s,
            transcribe_model=settings.transcribe_model,
            silence_ms=settings.vad_silence_ms,
            context_messages=settings.context_messages,
        )


@dataclass(frozen=True, slots=True)
class ProviderAudio:
    """The audio the provider hears and speaks: 8 kHz μ-law, or 24 kHz 16-bit PCM."""

    format: Literal["pcm16", "mulaw"]
    sample_rate: int

    @property
    def bytes_per_ms(self) -> float:
        """How many bytes of this audio make one millisecond."""
        return self.sample_rate * (1 if self.format == "mulaw" else 2) / 1000

    def matches(self, start: Start) -> bool:
        """True when the client speaks exactly this audio (it then passes through as is)."""
        return start.format == self.format and start.sample_rate == self.sample_rate


def provider_audio(start: Start) -> ProviderAudio:
    """The provider's audio for a client speaking `start`'s: μ-law for 8 kHz μ-law (a phone),
    else 24 kHz PCM."""
    if start.format == "mulaw" and start.sample_rate == MULAW_RATE:
        return ProviderAudio("mulaw", MULAW_RATE)
    return ProviderAudio("pcm16", PROVIDER_RATE)


def protocol_of(first: dict[str, Any] | None) -> Protocol:
    """The protocol a provider speaks, from its first event: beta when `session.created`
    carries a beta session (`input_audio_format`, no `audio`), else GA."""
    if first is None or first.get("type") != "session.created":
        return "ga"
    session = first.get("session")
    if not isinstance(session, dict) or session.get("type") == "realtime" or "audio" in session:
        return "ga"
    return "beta" if "input_audio_format" in session or "modalities" in session else "ga"


def session_update(
    agent: VoiceAgent, settings: RelaySettings, audio: ProviderAudio, protocol: Protocol = "ga"
) -> dict[str, Any]:
    """The `session.update` for `agent`, with `audio` both ways, in the shape of `protocol`."""
    tools = agent.tools
    turn_detection = {
        "type": "server_vad",
        "silence_duration_ms": settings.silence_ms,
        "create_response": True,
        "interrupt_response": True,
    }
    transcription = {"model": settings.transcribe_model}
    session: dict[str, Any]
    if protocol == "beta":
        codec = "g711_ulaw" if audio.format == "mulaw" else "pcm16"
        session = {
            "modalities": ["audio", "text"],  # beta has no audio-only response
            "instructions": agent.instructions,
            "voice": agent.voice,
            "input_audio_format": codec,
            "output_audio_format": codec,
            "input_audio_transcription": transcription,
            "turn_detection": turn_detection,
        }
    else:
        ga_format = (
            {"type": "audio/pcmu"}
            if audio.format == "mulaw"
            else {"type": "audio/pcm", "rate": audio.sample_rate}
        )
        session = {
            "type": "realtime",
            "model": settings.model,
            "instructions": agent.instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": ga_format,
                    "transcription": transcription,
                    "turn_detection": turn_detection,
                },
                "output": {"format": ga_format, "voice": agent.voice},
            },
        }
    session["tools"] = tools
    session["tool_choice"] = "auto" if tools else "none"
    return {"type": "session.update", "session": session}
