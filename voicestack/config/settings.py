"""The Settings model: its sections, the checks across them, and loading it from TOML/env."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    TomlConfigSettingsSource,
)

from voicestack.config.access import AccessSettings

DEFAULT_CONFIG_FILE = Path("voicestack.toml")


class Settings(AccessSettings):
    """Everything a voicestack server can be told; every field is also `VOICESTACK_<NAME>`."""

    config_file: ClassVar[Path | None] = None

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
