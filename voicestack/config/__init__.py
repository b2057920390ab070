"""Settings: defaults < config file (TOML) < VOICESTACK_* environment < CLI flags."""

from __future__ import annotations

from voicestack.config.replies import SpeechFormat
from voicestack.config.server import LogLevel, Role
from voicestack.config.settings import DEFAULT_CONFIG_FILE, Settings, load_settings
from voicestack.config_tables import (
    AgentConfig,
    AuthConfig,
    GithubConfig,
    ModelPrice,
    OidcProviderConfig,
    VoiceMode,
)

# Settings is built from one section a module (server, replies, live, limits, access); the table
# models live in voicestack/config_tables.py. Their names stay importable from here.
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
