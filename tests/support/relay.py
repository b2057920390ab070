"""Relay mode from a client's side: a server whose live conversations go to the fake Realtime
provider, and what that provider was sent.

Every relay test module asks for the same shared agent server (RELAY_FLAGS), so the modules
share one server process. Scripts are queued on the fake before a conversation opens: the relay
connects as the session begins, and takes the next script then.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.realtime import Conversation, silence
from tests.support.twilio import AUTH_TOKEN, PUBLIC_URL
from voicestack.testing.fake_openai import FakeOpenAI

# Its agent `typist` keeps the pipeline while the server relays every other agent.
CONFIG = Path(__file__).with_name("relay.toml")
TIMEOUT_S = 3  # --realtime-timeout-s: a silent provider fails the turn after this
RELAY_FLAGS = (
    "--voice-mode",
    "realtime",
    "--realtime-timeout-s",
    str(TIMEOUT_S),
    "--public-url",
    PUBLIC_URL,
    "--twilio-auth-token",
    AUTH_TOKEN,
    "--config",
    str(CONFIG),
)
relay_server = pytest.mark.agent_server(*RELAY_FLAGS)

# The events of one spoken turn, before the reply's audio.
SPOKEN_TURN_START = [
    "ready",
    "user_speech_started",
    "user_speech_stopped",
    "transcript",
    "reply_started",
]


async def say_turn(talk: Conversation, speech: bytes) -> dict[str, Any]:
    """Say `speech` followed by a second of silence; the `reply_started` it brings."""
    mark = len(talk.events)
    await talk.say(silence(300) + speech + silence(1000))
    return await talk.next_event("reply_started", after=mark)


def provider_session(fake: FakeOpenAI, index: int = -1) -> dict[str, Any]:
    """What the fake provider's connection `index` (default: the latest) received and sent."""
    return fake.realtime.session(index)


def client_events(fake: FakeOpenAI, kind: str, index: int = -1) -> list[dict[str, Any]]:
    """The relay's events of type `kind` on connection `index`, in order."""
    return [e for e in provider_session(fake, index)["client_events"] if e["type"] == kind]


async def settled_thread(threads: Any, thread_id: str, count: int) -> dict[str, Any]:
    """The thread once it has `count` messages and none is still streaming (within 10 s)."""
    async with asyncio.timeout(10):
        while True:
            thread: dict[str, Any] = await threads.get(thread_id)
            messages = thread["messages"]
            if len(messages) >= count and all(m["status"] != "streaming" for m in messages):
                return thread
            await asyncio.sleep(0.05)


async def first_tool_call(threads: Any, thread_id: str, status: str) -> dict[str, Any]:
    """The thread's first tool call, once it has `status` (within 10 s)."""
    async with asyncio.timeout(10):
        while True:
            calls: list[dict[str, Any]] = (await threads.get(thread_id))["toolCalls"]
            if calls and calls[0]["status"] == status:
                return calls[0]
            await asyncio.sleep(0.02)


# A slow count the model asks for, then what it says once interrupted.
SLOW_COUNT = {"name": "slow_count", "arguments": {"n": 4, "delay_s": 0.25}, "call_id": "c4"}
SLOW_COUNT_SCRIPT = {"responses": [{"function_calls": [SLOW_COUNT]}, {"text": "Stopped."}]}


@dataclass(frozen=True)
class CountCut:
    """A reply cut by a typed turn while its slow count ran: its id, its `reply_stopped`, and
    the `reply_stopped` of the answer to the interruption."""

    counting_id: str
    cut: dict[str, Any]
    answer: dict[str, Any]


async def cut_during_a_count(talk: Conversation, threads: Any, thread_id: str) -> CountCut:
    """On a started conversation scripted with SLOW_COUNT_SCRIPT: ask for the count, type
    over it once the call runs, and wait past when the count would have finished."""
    await talk.send_json({"type": "text", "text": "Count slowly."})
    counting_id = (await talk.next_event("reply_started"))["messageId"]
    await first_tool_call(threads, thread_id, "running")
    mark = len(talk.events)
    await talk.send_json({"type": "text", "text": "Stop."})
    cut = await talk.next_event("reply_stopped", after=mark)
    answer = await talk.wait_for(
        lambda e: e["type"] == "reply_stopped" and e["messageId"] != counting_id, after=mark
    )
    await asyncio.sleep(1.2)  # the count would have finished by now
    return CountCut(counting_id, cut, answer)
