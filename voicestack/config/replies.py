"""Settings of replies: model providers, the reply loop's limits, request limits, prices."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from voicestack.config.server import ServerSettings
from voicestack.config_tables import AgentConfig, ModelPrice

SpeechFormat = Literal["mp3", "wav", "flac", "opus", "pcm"]


class ReplySettings(ServerSettings):
    """Which providers and models write, hear and speak replies, and what one reply may do."""

    openai_base_url: str | None = Field(
        None, description="OpenAI-compatible API base URL (also OPENAI_BASE_URL)."
    )
    openai_api_key: SecretStr | None = Field(
        None, description="API key for the model provider (also OPENAI_API_KEY)."
    )
    # Audio may come from another server than the chat (speaches, Kokoro-FastAPI, LocalAI).
    # Unset, a capability uses the chat's server; the chat's key goes only to the chat's server.
    transcribe_base_url: str | None = Field(
        None,
        description="OpenAI-compatible base URL for transcription (speaches, LocalAI);"
        " default: --openai-base-url.",
    )
    transcribe_api_key: SecretStr | None = Field(
        None,
        description="API key for the transcription provider; default: the chat's key, when"
        " --transcribe-base-url is not set.",
    )
    speech_base_url: str | None = Field(
        None,
        description="OpenAI-compatible base URL for speech (speaches, Kokoro-FastAPI, LocalAI);"
        " default: --openai-base-url.",
    )
    speech_api_key: SecretStr | None = Field(
        None,
        description="API key for the speech provider; default: the chat's key, when"
        " --speech-base-url is not set.",
    )
    model: str = Field("gpt-4o-mini", description="Chat model that writes replies.")
    instructions: str = Field(
        "You are a helpful assistant.", description="System prompt sent before every thread."
    )
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature.")
    context_messages: int = Field(
        50, ge=1, le=1000, description="How many earlier messages a reply sees."
    )
    flush_ms: float = Field(
        50.0, gt=0, le=5000, description="Longest wait before streamed words are saved."
    )
    max_steps: int = Field(8, ge=1, le=50, description="Most model calls (tool rounds) per reply.")
    max_handoffs: int = Field(
        3,
        ge=0,
        le=50,
        description="Most times one reply may hand the thread to another agent (transfer_to_…);"
        " a transfer past it fails as a tool call and the reply goes on.",
    )
    agents: dict[str, AgentConfig] = Field(
        default_factory=dict,
        description="Named agents besides `assistant`: `[agents.NAME]` tables of the config file"
        " with the keys of voicestack.Agent.",
    )
    tool_timeout_s: float = Field(60.0, gt=0, description="Default time limit of one tool call.")
    provider_timeout_s: float = Field(
        60.0, gt=0, description="Time limit of one model request (between chunks)."
    )
    provider_retries: int = Field(
        3, ge=0, le=10, description="Retries of a model request refused with 429 or 5xx."
    )
    reply_timeout_s: float = Field(
        600.0,
        gt=0,
        description="Seconds one reply may take in all (model streams and tool calls, not waits"
        " for approval) before it ends failed with reply_timeout, keeping its text.",
    )
    max_reply_chars: int = Field(
        500_000,
        ge=1,
        description="Most characters one reply may stream (text and tool-call arguments) before"
        " it ends failed with reply_too_long, keeping its text.",
    )
    max_tool_calls_per_step: int = Field(
        16,
        ge=1,
        description="Most tool calls the model may ask for in one step; more fail the reply with"
        " too_many_tool_calls and none of them runs.",
    )
    max_audio_mb: float = Field(
        25.0, gt=0, le=1024, description="Largest audio upload POST /voice accepts, in MiB."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds a connection may take to send a request's headers; then it is"
        " answered 408 (if it sent part of them) and closed.",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a request body may stall (no bytes arriving) before it is answered"
        " 408 body_timeout and the connection closed.",
    )
    transcribe_model: str = Field(
        "gpt-4o-mini-transcribe", description="Speech-to-text model for POST /voice."
    )
    speech_model: str = Field("gpt-4o-mini-tts", description="Text-to-speech model for replies.")
    voice: str = Field("alloy", description="The voice that speaks replies.")
    speech_format: SpeechFormat = Field(
        "mp3",
        description="Audio format of spoken replies; pcm asks the provider for raw 24 kHz PCM"
        " and stores it as WAV, with no encoding or decoding anywhere.",
    )
    # Semantic memory (voicestack.agent.embedding): like audio, embeddings may come from another
    # server than the chat; the chat's key goes only to the chat's server.
    embedding_model: str = Field(
        "text-embedding-3-small",
        max_length=200,
        description="Embedding model of semantic memory: messages and notes are embedded by"
        " background jobs for hybrid search and recall. An empty value ('') turns it off:"
        " memory is then full-text only.",
    )
    embedding_dimensions: int | None = Field(
        None,
        ge=1,
        le=8192,
        description="Vector size asked of the embedding model (its `dimensions`); default: the"
        " model's own.",
    )
    embedding_base_url: str | None = Field(
        None,
        description="OpenAI-compatible base URL for embeddings; default: --openai-base-url.",
    )
    embedding_api_key: SecretStr | None = Field(
        None,
        description="API key for the embedding provider; default: the chat's key, when"
        " --embedding-base-url is not set.",
    )
    recall: int = Field(
        0,
        ge=0,
        le=20,
        description="How many matches from the user's other threads a reply's context recalls"
        " (semantic memory); 0: none.",
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description='Model prices in USD: `[prices."MODEL"]` tables of the config file with'
        " input_per_mtok, output_per_mtok, audio_in_per_min and speech_per_mchar; a model"
        " without one has no cost (null), never a guessed one.",
    )

    @field_validator("prices")
    @classmethod
    def _prices_name_models(cls, prices: dict[str, ModelPrice]) -> dict[str, ModelPrice]:
        for model, price in prices.items():
            if not model.strip():
                raise ValueError('A price table needs a model name, as in prices."gpt-4o-mini".')
            if not price.model_fields_set:
                raise ValueError(
                    f'The price table of "{model}" names no price: give input_per_mtok,'
                    " output_per_mtok, audio_in_per_min or speech_per_mchar."
                )
        return prices
