"""What a relayed conversation is given (RelayContext), and how a provider fails a turn."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from voicestack.voice.realtime.client import VoiceClient
from voicestack.voice.realtime.wire import Start
from voicestack.voice.relay.records import RelayRecords, VoiceAgent
from voicestack.voice.relay.session_config import RelaySettings


class TurnFailed(Exception):
    """The provider failed the turn; `code` and `message` are saved on the reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RelayContext:
    """Which thread is talked on, through which client, with which agent and provider, and
    where the conversation is kept.

    `provider_key` gives the bearer key of each new provider connection (None: the provider
    wants none); `tool_call_seen` takes the thread feed's `tool_call` events, when the records
    wait on them for approvals."""

    thread_id: str
    agent: VoiceAgent
    records: RelayRecords
    start: Start
    client: VoiceClient
    settings: RelaySettings
    flush_ms: float
    provider_key: Callable[[], Awaitable[str | None]]
    tool_call_seen: Callable[[dict[str, Any]], None] | None = None
    forget: Callable[[Any], None] | None = None
