"""Settings of how people and phones reach the server: public URL, phone calls, sign-in."""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator

from voicestack.config.limits import LimitSettings
from voicestack.config_tables import AuthConfig, OidcProviderConfig

_PUBLIC_URL = re.compile(r"https?://[^/?#\s]+(/[^?#\s]*)?")


class AccessSettings(LimitSettings):
    """The public URL, phone calls, and who may sign in with which provider."""

    public_url: str | None = Field(
        None,
        description="The URL clients reach this server at (https://voice.example.com), when a"
        " TLS proxy stands in front of it: Twilio's webhook signature covers it, and phone"
        " calls stream to its host.",
    )
    twilio_auth_token: SecretStr | None = Field(
        None,
        description="The Twilio account's auth token: POST /twilio/voice checks each webhook's"
        " X-Twilio-Signature with it. Unset, phone calls are off: 404 `twilio_not_configured`.",
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

    @field_validator("public_url")
    @classmethod
    def _public_url_is_a_base_url(cls, url: str | None) -> str | None:
        if url is not None and not _PUBLIC_URL.fullmatch(url):
            raise ValueError(
                f"{url!r} is not a public URL: give scheme://host[:port][/path], with no query"
                " (https://voice.example.com)."
            )
        return url.rstrip("/") if url is not None else None

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
