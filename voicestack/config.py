"""Settings: defaults < config file (TOML) < VOICESTACK_* environment < CLI flags."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from voicestack.config_tables import (
    AgentConfig,
    AuthConfig,
    GithubConfig,
    ModelPrice,
    OidcProviderConfig,
    VoiceMode,
)

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
SpeechFormat = Literal["mp3", "wav", "flac", "opus", "pcm"]
Role = Literal["single", "primary", "edge"]


DEFAULT_CONFIG_FILE = Path("voicestack.toml")
_ORIGIN = re.compile(r"https?://(\[[0-9a-f:]+\]|[a-z0-9.-]+)(:[0-9]{1,5})?")
_PUBLIC_URL = re.compile(r"https?://[^/?#\s]+(/[^?#\s]*)?")


class Settings(BaseSettings):
    """Everything a voicestack server can be told; every field is also `VOICESTACK_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="VOICESTACK_", extra="forbid")
    config_file: ClassVar[Path | None] = None

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on (0 picks one).")
    db: Path = Field(Path("voicestack.db"), description="The SQLite database file.")
    apps: list[str] = Field(
        default_factory=list, description="Python modules to load server functions from."
    )
    log_level: LogLevel = Field("info", description="Server log verbosity.")
    no_autocheckpoint: bool = Field(
        False, description="Leave WAL checkpoints to Litestream (wal_autocheckpoint=0)."
    )
    readers: int = Field(4, ge=1, le=64, description="Reader connections for queries.")
    workers: int = Field(
        1,
        ge=1,
        description="Server processes sharing the port and the database file (each with its own"
        " connections); 1 serves from this process.",
    )
    role: Role = Field(
        "single",
        description="`single`: one server on its database file. `primary`: also serves edges"
        " over --nats. `edge`: no database file; holds the connections and forwards the rest"
        " to the primaries over --nats.",
    )
    nats: str | None = Field(
        None, description="NATS server URL joining primaries and edges (nats://host:4222)."
    )
    ping_s: float = Field(15.0, gt=0, description="Seconds between SSE keep-alive comments.")
    no_feed_compression: bool = Field(
        False,
        description="Send thread feeds uncompressed even to clients that accept"
        " Content-Encoding: deflate.",
    )
    send_timeout_s: float = Field(
        30.0, gt=0, description="Seconds a stalled SSE client may block a write before it is cut."
    )
    change_log_keep: int = Field(
        10_000, ge=100, description="Commits kept in the change log for reconnecting clients."
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest JSON request body accepted, in bytes."
    )
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
    # Limits per token are counted by each server process on its own (see http/limits.py).
    max_args_bytes: int = Field(
        262_144,
        ge=1024,
        description="Largest arguments of one call or watch (JSON: a call's body, ?args=, ?q=),"
        " in bytes.",
    )
    max_streams_per_token: int = Field(
        100, ge=0, description="Event streams one token may hold open at once; 0: no limit."
    )
    rate_mutations_per_min: int = Field(
        600,
        ge=0,
        description="Mutations and actions one token may call per minute (a minute's worth at"
        " once at most); 0: no limit.",
    )
    rate_replies_per_min: int = Field(
        120,
        ge=0,
        description="Replies (messages sent, recordings posted) one token may start per minute;"
        " 0: no limit.",
    )
    rate_voice_per_min: int = Field(
        60, ge=0, description="POST /voice requests one token may make per minute; 0: no limit."
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="An origin (https://app.example.com) whose pages may call the API; repeat"
        " for more. None by default: no cross-origin calls.",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_origins(cls, origins: list[str]) -> list[str]:
        # Browsers send `scheme://host[:port]` exactly; anything else would never match.
        for origin in origins:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: give scheme://host[:port], with no path"
                    " or trailing slash (https://app.example.com)."
                )
        return origins

    job_timeout_s: float = Field(
        600.0, gt=0, description="Seconds a scheduled job may run before the attempt fails."
    )
    public_url: str | None = Field(
        None,
        description="The URL clients reach this server at (https://voice.example.com), when a"
        " TLS proxy stands in front of it: Twilio's webhook signature covers it, and phone"
        " calls stream to its host.",
    )
    twilio_auth_token: SecretStr | None = Field(
        None,
        description="The Twilio account's auth token: POST /twilio/voice checks each webhook's"
        " X-Twilio-Signature with it. Unset, phone calls are off (503).",
    )
    max_calls: int = Field(
        100,
        ge=0,
        description="Phone call media streams open at once, started or not (counted by each"
        " server process); over it, a stream is closed with 1013 `too_many_calls`. 0: no limit.",
    )
    twilio_user: str = Field(
        "twilio",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$",
        description="The user who owns the threads of phone calls (created on the first call);"
        " admins see them too.",
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

    @field_validator("public_url")
    @classmethod
    def _public_url_is_a_base_url(cls, url: str | None) -> str | None:
        if url is not None and not _PUBLIC_URL.fullmatch(url):
            raise ValueError(
                f"{url!r} is not a public URL: give scheme://host[:port][/path], with no query"
                " (https://voice.example.com)."
            )
        return url.rstrip("/") if url is not None else None

    @model_validator(mode="after")
    def _calls_stream_over_tls(self) -> Settings:
        # Twilio opens media streams over wss:// only: with an http:// public URL every call
        # would fail after its webhook, so the server does not start that way.
        if (
            self.twilio_auth_token is not None
            and self.public_url is not None
            and self.public_url.startswith("http://")
        ):
            raise ValueError(
                "--twilio-auth-token needs an https:// --public-url: Twilio streams calls over"
                " wss:// only."
            )
        return self

    quiet_token: bool = Field(
        False, description="Do not print the page URL with the first admin token at start."
    )
    auth: AuthConfig = Field(
        default_factory=AuthConfig,
        description="Sign-in providers: `[auth.oidc.NAME]` tables (issuer, client_id,"
        " client_secret, scopes) and `[auth.github]` (client_id, client_secret).",
    )
    oidc_issuer: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="An OpenID Connect issuer people sign in with, as the provider `oidc`"
        " (https://accounts.google.com, https://keycloak.example.com/realms/NAME); its"
        " redirect URI is --public-url + /auth/callback/oidc.",
    )
    oidc_client_id: str | None = Field(None, description="The client id of --oidc-issuer.")
    oidc_client_secret: SecretStr | None = Field(
        None, description="The client secret of --oidc-issuer."
    )
    signin_allowed_domains: list[str] = Field(
        default_factory=list,
        description="Email domains whose people may sign up by signing in (example.com);"
        " repeat or separate with commas. None: anyone the providers accept.",
    )
    session_days: float = Field(
        14.0,
        gt=0,
        le=366,
        description="Days a sign-in session lasts unused; each use extends it.",
    )
    smtp_url: SecretStr | None = Field(
        None,
        description="An SMTP server for email sign-in links (smtp://user:pass@host:587,"
        " smtps://host:465); unset, there is no email sign-in. Needs --public-url.",
    )
    smtp_from: str = Field(
        "voicestack@localhost", description="The From address of email sign-in links."
    )

    @field_validator("signin_allowed_domains")
    @classmethod
    def _split_domains(cls, domains: list[str]) -> list[str]:
        return [d.strip().lower() for item in domains for d in item.split(",") if d.strip()]

    @model_validator(mode="after")
    def _oidc_flags_together(self) -> Settings:
        given = [self.oidc_issuer, self.oidc_client_id]
        if any(v is not None for v in given) and not all(v is not None for v in given):
            raise ValueError("--oidc-issuer and --oidc-client-id go together.")
        if self.oidc_issuer is not None and "oidc" in self.auth.oidc:
            raise ValueError(
                "--oidc-issuer names the provider `oidc`, which [auth.oidc.oidc] names too."
            )
        return self

    @model_validator(mode="after")
    def _scale_out_needs_nats(self) -> Settings:
        if self.role != "single" and not self.nats:
            raise ValueError(f"--role {self.role} needs --nats URL (nats://host:4222).")
        if self.role == "edge" and self.workers > 1:
            raise ValueError("--role edge runs one process: start more edges instead of --workers.")
        return self

    @model_validator(mode="after")
    def _email_links_need_a_public_url(self) -> Settings:
        # Links are built from --public-url alone: from a request's Host header, anyone could
        # have a link to someone else's sign-in mailed pointing at their own server.
        if self.smtp_url is not None and self.public_url is None:
            raise ValueError(
                "--smtp-url needs --public-url: email sign-in links point at it"
                " (https://voice.example.com)."
            )
        return self

    def oidc_providers(self) -> dict[str, OidcProviderConfig]:
        """Every OpenID Connect provider: the config file's, and `oidc` from the flags."""
        providers = dict(self.auth.oidc)
        if self.oidc_issuer is not None and self.oidc_client_id is not None:
            providers["oidc"] = OidcProviderConfig(
                issuer=self.oidc_issuer,
                client_id=self.oidc_client_id,
                client_secret=self.oidc_client_secret,
                title="SSO",
            )
        return providers

    def secret_values(self) -> list[str]:
        """The values of every secret setting that is set (API keys), for the log to mask."""
        values = (getattr(self, name) for name in type(self).model_fields)
        own = [v.get_secret_value() for v in values if isinstance(v, SecretStr)]
        return own + self.auth.secret_values()

    @property
    def max_audio_bytes(self) -> int:
        """--max-audio-mb in bytes."""
        return int(self.max_audio_mb * 1024 * 1024)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """CLI flags (init) win over the environment, which wins over the config file."""
        config_file = cls.config_file or DEFAULT_CONFIG_FILE
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=config_file),
        )


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from `config_file` (default ./voicestack.toml if present), env, then `overrides`.

    Overrides that are None are ignored, so unset CLI flags fall through to the other sources.
    """
    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(f"Config file {config_file} does not exist.")
    given = {k: v for k, v in overrides.items() if v is not None}
    # The provider's own variable names work too, as every OpenAI client reads them.
    for field_name, variable in (
        ("openai_api_key", "OPENAI_API_KEY"),
        ("openai_base_url", "OPENAI_BASE_URL"),
    ):
        env_name = f"VOICESTACK_{field_name.upper()}"
        if field_name not in given and env_name not in os.environ and os.environ.get(variable):
            given[field_name] = os.environ[variable]
    bound = type("BoundSettings", (Settings,), {"config_file": config_file})
    return Settings.model_validate(bound(**given).model_dump())


# The table models live in voicestack/config_tables.py; their names stay importable from here.
__all__ = [
    "DEFAULT_CONFIG_FILE",
    "AgentConfig",
    "AuthConfig",
    "GithubConfig",
    "LogLevel",
    "ModelPrice",
    "OidcProviderConfig",
    "Role",
    "Settings",
    "SpeechFormat",
    "VoiceMode",
    "load_settings",
]
