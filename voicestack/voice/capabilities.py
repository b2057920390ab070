"""Which provider serves each capability: chat, transcription and speech.

A fully self-hosted agent takes its chat from one server (Ollama, vLLM) and its audio from
another (speaches, Kokoro-FastAPI, LocalAI). Unset, transcription and speech use the chat's
server and key; the chat's key is never sent to another server than the chat's.
"""

from __future__ import annotations

from pydantic import SecretStr

from voicestack.agent.llm import ProviderRole, ProviderSettings
from voicestack.config import Settings


def chat_provider_settings(settings: Settings) -> ProviderSettings:
    """The chat's provider: --openai-base-url and --openai-api-key."""
    return ProviderSettings(
        base_url=settings.openai_base_url,
        api_key=_secret(settings.openai_api_key),
        model=settings.model,
        temperature=settings.temperature,
        timeout_s=settings.provider_timeout_s,
        max_retries=settings.provider_retries,
    )


def transcription_provider_settings(settings: Settings) -> ProviderSettings:
    """The provider of speech-to-text: --transcribe-base-url and --transcribe-api-key."""
    return _audio_provider_settings(
        settings,
        "transcription",
        "transcribe",
        settings.transcribe_base_url,
        settings.transcribe_api_key,
        settings.transcribe_model,
    )


def speech_provider_settings(settings: Settings) -> ProviderSettings:
    """The provider of text-to-speech: --speech-base-url and --speech-api-key."""
    return _audio_provider_settings(
        settings,
        "speech",
        "speech",
        settings.speech_base_url,
        settings.speech_api_key,
        settings.speech_model,
    )


def _audio_provider_settings(
    settings: Settings,
    name: str,
    flag: str,
    base_url: str | None,
    api_key: SecretStr | None,
    model: str,
) -> ProviderSettings:
    own_server = bool(base_url)
    key = _secret(api_key)
    if key is None and not own_server:
        key = _secret(settings.openai_api_key)
    key_setting = f"--{flag}-api-key (VOICESTACK_{flag.upper()}_API_KEY)"
    if api_key is None and not own_server:
        key_setting = f"OPENAI_API_KEY, or {key_setting}"
    role = ProviderRole(
        name=name,
        key_setting=key_setting,
        not_configured=f"No {name} provider is configured: set --{flag}-base-url, or"
        " OPENAI_API_KEY or --openai-base-url, which it defaults to.",
    )
    return ProviderSettings(
        base_url=base_url if own_server else settings.openai_base_url,
        api_key=key,
        model=model,
        timeout_s=settings.provider_timeout_s,
        max_retries=settings.provider_retries,
        role=role,
    )


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
