"""The `session.update` that starts a relayed conversation: the agent's instructions, voice and
tools, the audio formats both ways, input transcription, and the provider's own turn-taking.

Audio is 24 kHz 16-bit PCM both ways whatever the client speaks (the relay resamples), so one
shape serves the audio socket and phone calls alike. The event uses the GA shape
(`session.type` "realtime", `audio.input`/`audio.output`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voicestack.agent.handoff import AgentTools
from voicestack.config import Settings
from voicestack.voice.relay.provider import realtime_url

PROVIDER_RATE = 24000


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
        """The --realtime-* flags; the chat's key goes to the provider."""
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return cls(
            url=realtime_url(
                settings.openai_base_url, settings.realtime_url, settings.realtime_model
            ),
            api_key=key,
            model=settings.realtime_model,
            timeout_s=settings.realtime_timeout_s,
            transcribe_model=settings.transcribe_model,
            silence_ms=settings.vad_silence_ms,
            context_messages=settings.context_messages,
        )


def realtime_tools(offer: AgentTools) -> list[dict[str, Any]]:
    """The agent's tools as Realtime function definitions (flat, not nested in `function`)."""
    return [
        {"type": "function", **spec["function"]}
        for spec in offer.openai_specs()
        if spec.get("type") == "function"
    ]


def session_update(offer: AgentTools, settings: RelaySettings) -> dict[str, Any]:
    """The `session.update` for the agent of `offer`."""
    agent = offer.agent
    tools = realtime_tools(offer)
    audio = {"type": "audio/pcm", "rate": PROVIDER_RATE}
    session: dict[str, Any] = {
        "type": "realtime",
        "model": settings.model,
        "instructions": agent.instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": audio,
                "transcription": {"model": settings.transcribe_model},
                "turn_detection": {
                    "type": "server_vad",
                    "silence_duration_ms": settings.silence_ms,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": audio, "voice": agent.voice},
        },
        "tools": tools,
        "tool_choice": "auto" if tools else "none",
    }
    return {"type": "session.update", "session": session}
