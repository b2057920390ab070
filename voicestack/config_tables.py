"""The config file's tables: `[agents.NAME]`, `[prices."MODEL"]` and `[auth]` (providers of
sign-in), each a model that Settings holds."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

VoiceMode = Literal["pipeline", "realtime"]


class AgentConfig(BaseModel):
    """An `[agents.NAME]` table of the config file: the keys of `voicestack.Agent` but its name."""

    model_config = ConfigDict(extra="forbid")

    instructions: str
    model: str | None = None
    tools: list[str] | None = None
    voice: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_steps: int | None = Field(None, ge=1, le=50)
    handoffs: list[str] = Field(default_factory=list)
    description: str = ""
    recall: int | None = Field(None, ge=0, le=20)
    voice_mode: VoiceMode | None = None


class ModelPrice(BaseModel):
    """A `[prices."MODEL"]` table: what a model costs, in USD; a price left out is unknown."""

    model_config = ConfigDict(extra="forbid")

    input_per_mtok: float | None = Field(None, ge=0, allow_inf_nan=False)
    output_per_mtok: float | None = Field(None, ge=0, allow_inf_nan=False)
    audio_in_per_min: float | None = Field(None, ge=0, allow_inf_nan=False)
    speech_per_mchar: float | None = Field(None, ge=0, allow_inf_nan=False)


_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


class OidcProviderConfig(BaseModel):
    """An `[auth.oidc.NAME]` table: an OpenID Connect provider people may sign in with."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(pattern=r"^https?://\S+$")
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    title: str | None = None  # what the sign-in button says; default: the provider's name


class GithubConfig(BaseModel):
    """The `[auth.github]` table: sign-in with GitHub's OAuth2 API (an OAuth app)."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    title: str = "GitHub"
    # GitHub Enterprise Server answers at its own addresses.
    web_url: str = Field("https://github.com", pattern=r"^https?://\S+$")
    api_url: str = Field("https://api.github.com", pattern=r"^https?://\S+$")


class AuthConfig(BaseModel):
    """The `[auth]` table: the identity providers of the page's sign-in."""

    model_config = ConfigDict(extra="forbid")

    oidc: dict[str, OidcProviderConfig] = Field(default_factory=dict)
    github: GithubConfig | None = None

    @field_validator("oidc")
    @classmethod
    def _names_are_path_segments(
        cls, providers: dict[str, OidcProviderConfig]
    ) -> dict[str, OidcProviderConfig]:
        for name in providers:
            if not _PROVIDER_NAME.fullmatch(name) or name in ("github", "email"):
                raise ValueError(
                    f"{name!r} cannot name a provider: use 1-32 lowercase letters, digits, _ or -,"
                    " and neither github nor email."
                )
        return providers

    def secret_values(self) -> list[str]:
        """The client secrets that are set, for the log to mask."""
        secrets = [p.client_secret for p in self.oidc.values()]
        secrets.append(self.github.client_secret if self.github else None)
        return [s.get_secret_value() for s in secrets if s is not None]
