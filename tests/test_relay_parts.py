"""Relay mode's parts without a server: which agents are relayed, where the provider is, the
provider's event names, and the proportional cut of a transcript at barge-in."""

from __future__ import annotations

import base64
import json

import pytest

from voicestack.agent.agents import Agent, AgentDefaults, build_agents
from voicestack.config import AgentConfig, Settings
from voicestack.voice.relay.audio import heard_words
from voicestack.voice.relay.events import (
    append_audio_text,
    error_of,
    is_aftermath,
    normalized,
    truncate,
    usage_of,
)
from voicestack.voice.relay.provider import realtime_url
from voicestack.voice.relay.session_config import RelaySettings


def test_an_agent_takes_its_own_voice_mode_or_the_servers() -> None:
    defaults = AgentDefaults("Help.", "gpt-4o-mini", "alloy", None, 8, "pipeline")
    configured = {
        "phone": AgentConfig.model_validate({"instructions": "Talk.", "voice_mode": "realtime"}),
        "desk": AgentConfig.model_validate({"instructions": "Type."}),
    }

    agents = build_agents(defaults, configured, [], [])

    modes = {profile.name: profile.voice_mode for profile in agents.profiles}
    assert modes == {"assistant": "pipeline", "phone": "realtime", "desk": "pipeline"}
    with pytest.raises(ValueError, match="voice_mode must be 'pipeline' or 'realtime'"):
        Agent("odd", "Hi.", voice_mode="telepathy")


def test_the_provider_url_follows_the_chat_base_url_unless_given() -> None:
    assert realtime_url("https://api.openai.com/v1", None, "gpt-realtime") == (
        "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    )
    assert realtime_url("http://localhost:8000/v1/", None, "m 1") == (
        "ws://localhost:8000/v1/realtime?model=m+1"
    )
    assert realtime_url(None, "ws://x/rt", "m") == "ws://x/rt"
    assert realtime_url(None, None, "m") is None


def test_beta_event_names_are_read_as_ga_names() -> None:
    beta = normalized('{"type": "response.audio_transcript.delta", "delta": "Hi"}')
    assert beta == {"type": "response.output_audio_transcript.delta", "delta": "Hi"}
    assert normalized('{"type": "response.audio.delta"}')["type"] == "response.output_audio.delta"
    assert normalized('{"type": "response.output_audio.delta"}')["type"] == (
        "response.output_audio.delta"
    )
    done = {
        "type": "response.done",
        "response": {
            "status": "failed",
            "status_details": {"error": {"code": "x", "message": "Broke."}},
            "usage": {"input_tokens": 3, "output_tokens": 4},
        },
    }
    assert error_of(done) == ("x", "Broke.")
    assert usage_of(done) == (3, 4)


def test_the_words_heard_are_in_proportion_to_the_audio_played() -> None:
    text = "one two three four five six seven eight nine ten"
    assert heard_words(text, 0, 1000) == ""
    assert heard_words(text, 350, 1000) == "one two three"
    assert heard_words(text, 1000, 1000) == text
    assert heard_words(text, 500, 0) == ""


def test_an_error_caused_by_a_barge_ins_truncate_is_told_apart() -> None:
    sent = truncate("item_1", 900)
    caused = {
        "type": "error",
        "error": {"code": "x", "message": "Late.", "event_id": sent["event_id"]},
    }
    other = {"type": "error", "error": {"code": "x", "message": "Broke.", "event_id": None}}

    assert sent["type"] == "conversation.item.truncate"
    assert is_aftermath(caused) is True
    assert is_aftermath(other) is False


def test_an_audio_append_is_written_as_the_json_event_it_is() -> None:
    audio = bytes(range(256)) * 3

    text = append_audio_text(audio)

    assert json.loads(text) == {
        "type": "input_audio_buffer.append",
        "audio": base64.b64encode(audio).decode(),
    }


def test_the_chat_key_goes_only_to_the_chat_providers_own_realtime_url() -> None:
    chat = {"openai_base_url": "https://api.openai.com/v1", "openai_api_key": "sk-chat"}
    derived = RelaySettings.from_settings(Settings(**chat))
    assert derived.url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert derived.api_key == "sk-chat"
    elsewhere = Settings(**chat, realtime_url="wss://other.example/v1/realtime")
    assert RelaySettings.from_settings(elsewhere).api_key is None
    own_key = Settings(**chat, realtime_url="wss://other.example/rt", realtime_api_key="sk-rt")
    assert RelaySettings.from_settings(own_key).api_key == "sk-rt"
