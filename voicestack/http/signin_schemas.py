"""The bodies and answers of sign-in's routes, for the OpenAPI document (http/schemas.py)."""

from __future__ import annotations

from email.utils import parseaddr
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# local@domain.tld, without the characters of address lists, display names or comments.
_ADDRESS = r"^[^@\s<>,;:()\[\]\\\"]+@[^@\s<>,;:()\[\]\\\"]+\.[^@\s<>,;:()\[\]\\\"]+$"


class Me(BaseModel):
    """GET /api/me: the caller."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    email: str | None
    role: Literal["admin", "user"]


class ProviderButton(BaseModel):
    """One provider of the sign-in screen; `url` starts its sign-in."""

    name: str
    title: str
    url: str


class SignInOptions(BaseModel):
    """GET /auth/providers: what the sign-in screen offers."""

    model_config = ConfigDict(extra="allow")

    providers: list[ProviderButton]
    email: bool = Field(description="True when email sign-in links are on (--smtp-url).")


class Done(BaseModel):
    """`{"ok": true}`."""

    ok: bool


class EmailLinkBody(BaseModel):
    """POST /auth/email: where to send a sign-in link."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=254, pattern=_ADDRESS)

    @field_validator("email")
    @classmethod
    def _one_plain_address(cls, email: str) -> str:
        # One bare addr-spec: no display name, list or header syntax to smuggle recipients.
        if parseaddr(email)[1] != email:
            raise ValueError("not a single email address")
        return email
