"""Settings of the server process: address, database, workers, scale-out role, streams."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
Role = Literal["single", "primary", "edge"]


class ServerSettings(BaseSettings):
    """Where the server listens, what it stores, how many processes serve and its streams."""

    model_config = SettingsConfigDict(env_prefix="VOICESTACK_", extra="forbid")

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
        " connections); 1 serves from this process; `auto`: one per CPU core it may use.",
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

    @field_validator("workers", mode="before")
    @classmethod
    def _workers_auto(cls, value: Any) -> Any:
        """`auto` (any case) is one worker per CPU core this process may run on."""
        if isinstance(value, str):
            if value.strip().lower() == "auto":
                return usable_cores()
            if not value.strip().isdigit():
                raise ValueError(f"{value!r} is neither a number of processes nor `auto`")
        return value


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
