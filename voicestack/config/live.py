"""Settings of live conversations: turn detection, relay to a realtime model, the drain."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from voicestack.config.replies import ReplySettings
from voicestack.config_tables import VoiceMode


class LiveSettings(ReplySettings):
    """How live conversations find turns and reach a realtime provider, and the drain."""

    vad_threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Live conversation: Silero VAD speech probability above which a 32 ms chunk"
        " counts as speech.",
    )
    vad_silence_ms: int = Field(
        550, ge=64, le=10_000, description="Live conversation: silence that ends a turn, in ms."
    )
    vad_min_speech_ms: int = Field(
        250,
        ge=32,
        le=10_000,
        description="Live conversation: speech that starts a turn (shorter sounds are ignored),"
        " in ms.",
    )
    vad_energy_floor_dbfs: float = Field(
        -50.0,
        ge=-120,
        le=0,
        description="Live conversation: a 32 ms chunk quieter than this (RMS, dBFS), or not"
        " 9 dB above the learned room noise, is silence without running the VAD model;"
        " -120 turns the gate off (the model judges every chunk).",
    )
    min_interruption_ms: int = Field(
        500,
        ge=32,
        le=10_000,
        description="Live conversation: speech during a reply that interrupts it, in ms.",
    )
    voice_mode: VoiceMode = Field(
        "pipeline",
        description="Live conversations (the audio socket, phone calls): `pipeline` (VAD,"
        " transcription, chat, speech) or `realtime` (relayed to a speech-to-speech model);"
        " an agent's voice_mode overrides it.",
    )
    realtime_url: str | None = Field(
        None,
        description="WebSocket URL of the OpenAI Realtime-compatible provider; default:"
        " --openai-base-url as ws(s)://.../realtime?model=--realtime-model.",
    )
    realtime_model: str = Field(
        "gpt-realtime", description="Speech-to-speech model of relay mode (--voice-mode realtime)."
    )
    realtime_api_key: SecretStr | None = Field(
        None,
        description="API key for the realtime provider (relay mode); default: the chat's key,"
        " unless --realtime-url is set.",
    )
    realtime_timeout_s: float = Field(
        15.0,
        gt=0,
        le=600,
        description="Relay mode: seconds the provider may stay silent during a turn (and take to"
        " connect) before the turn fails.",
    )
    drain_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="On SIGTERM, seconds in-flight replies may take to finish before they are"
        " marked interrupted.",
    )

    @field_validator("realtime_url")
    @classmethod
    def _realtime_url_is_a_websocket(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("ws://", "wss://")):
            raise ValueError(
                f"{url!r} is not a WebSocket URL: give ws://host/... or wss://host/..."
                " (wss://api.openai.com/v1/realtime?model=gpt-realtime)."
            )
        return url
