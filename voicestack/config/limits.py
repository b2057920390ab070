"""Settings that limit callers: per-token sizes and rates, CORS origins, job time limit."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from voicestack.config.live import LiveSettings

_ORIGIN = re.compile(r"https?://(\[[0-9a-f:]+\]|[a-z0-9.-]+)(:[0-9]{1,5})?")


class LimitSettings(LiveSettings):
    """What one token may send and start, which origins may call, and how long jobs may run."""

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
