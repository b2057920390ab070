"""What a relayed conversation is given (RelayContext), and how a provider fails a turn."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voicestack.agent.agents import AgentProfile
from voicestack.agent.cost import Pricing
from voicestack.identity import Caller
from voicestack.store.store import Store
from voicestack.voice.realtime.client import VoiceClient
from voicestack.voice.realtime.wire import Start
from voicestack.voice.relay.session_config import RelaySettings
from voicestack.voice.relay.tools import RelayTools


class TurnFailed(Exception):
    """The provider failed the turn; `code` and `message` are saved on the reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RelayContext:
    """Who talks on which thread, through which client, with which agent and provider."""

    thread_id: str
    user: Caller | None
    agent: AgentProfile
    store: Store
    start: Start
    client: VoiceClient
    settings: RelaySettings
    tools: RelayTools
    pricing: Pricing | None
    flush_ms: float
    forget: Callable[[Any], None] | None = None
