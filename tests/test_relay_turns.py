"""Relay mode (`--voice-mode realtime`): a spoken turn goes to the Realtime provider over its
WebSocket, and comes back as audio for the client and as messages in the thread, live on its
feed; GA and beta event names alike.

Real speech from espeak-ng goes over a real audio socket to a real server, which relays it to
the fake Realtime provider (its server VAD, transcripts, audio, usage and function calls).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.agent import Threads, deltas, feed, read_until, snapshot
from tests.support.realtime import conversation, spoken_pcm, typed_turn
from tests.support.relay import (
    SPOKEN_TURN_START,
    client_events,
    first_tool_call,
    provider_session,
    relay_server,
    say_turn,
    settled_thread,
)
from tests.support.server import ServerProcess
from tests.support.voice import requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, requires_espeak, relay_server]

ANSWER = "It is sunny in Paris. Enjoy your day."
USAGE = {"input_tokens": 120, "output_tokens": 45}


async def test_a_spoken_turn_is_relayed_and_saved_live_in_the_thread(
    fake: FakeOpenAI,
    client: httpx.AsyncClient,
    threads: Threads,
    server: ServerProcess,
    tmp_path: Path,
) -> None:
    fake.realtime.script(
        {
            "turns": ["What is the weather like today"],
            "responses": [{"text": ANSWER, "audio_ms": 1200, "usage": USAGE}],
        }
    )
    thread_id = await threads.create()
    speech = spoken_pcm(tmp_path, "What is the weather like today?")

    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        async with conversation(server, thread_id) as talk:
            ready = await talk.start()
            started = await say_turn(talk, speech)
            reply_id = started["messageId"]
            stopped = await talk.next_event("reply_stopped")
            live = await read_until(
                stream,
                lambda e: (
                    e.event == "message"
                    and e.json["id"] == reply_id
                    and e.json["voice"] is not None
                ),
            )

    assert ready == {"type": "ready", "sampleRate": 16000}
    kinds = talk.kinds()
    assert kinds[:5] == SPOKEN_TURN_START
    assert set(kinds[5:-1]) == {"reply_audio"}
    assert stopped == {"type": "reply_stopped", "messageId": reply_id, "status": "complete"}
    said = talk.events[3]
    user_id = said["messageId"]
    assert said == {
        "type": "transcript",
        "messageId": user_id,
        "text": "What is the weather like today",
    }
    # The reply's audio, 24 kHz from the provider, arrives as 16 kHz PCM: 1.2 s of it.
    audio = b"".join(frame for frames in talk.audio.values() for frame in frames)
    assert abs(len(audio) / 32 - 1200) < 30
    captions = "".join(e["text"] for e in talk.events if e["type"] == "reply_audio")
    assert captions == ANSWER

    # Both transcripts streamed into the thread as deltas, as every watcher sees them.
    assert "".join(d["text"] for d in deltas(live, user_id)) == "What is the weather like today"
    assert "".join(d["text"] for d in deltas(live, reply_id)) == ANSWER
    thread = await settled_thread(threads, thread_id, 2)
    user, reply = thread["messages"]
    assert (user["role"], user["text"], user["status"]) == (
        "user",
        "What is the weather like today",
        "complete",
    )
    assert user["usage"]["audioInSeconds"] > 0.5
    assert (reply["role"], reply["text"], reply["status"], reply["replyTo"]) == (
        "assistant",
        ANSWER,
        "complete",
        user_id,
    )
    assert reply["agent"] == "assistant"
    assert reply["usage"]["promptTokens"] == 120
    assert reply["usage"]["completionTokens"] == 45
    voice = reply["voice"]
    assert sorted(voice) == sorted(
        [
            "endOfSpeechToTranscriptMs",
            "transcriptToFirstTokenMs",
            "firstTokenToFirstAudioMs",
            "voiceToVoiceMs",
            "audioInSeconds",
            "audioOutSeconds",
            "interrupted",
        ]
    )
    assert voice["interrupted"] is False
    assert abs(voice["audioOutSeconds"] - 1.2) < 0.03
    assert voice["voiceToVoiceMs"] is not None

    # The provider was configured for the agent, and heard the speech at 24 kHz.
    session = provider_session(fake)
    (update,) = client_events(fake, "session.update")
    config = update["session"]
    assert config["type"] == "realtime"
    assert config["instructions"] == "You are a helpful assistant."
    assert config["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert config["audio"]["output"]["voice"] == "alloy"
    assert config["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert {tool["name"] for tool in config["tools"]} >= {"slow_count", "guarded_echo"}
    assert session["headers"]["authorization"].startswith("Bearer ")
    # No permessage-deflate: compressing base64 audio cost more than it saved.
    assert "sec-websocket-extensions" not in session["headers"]
    assert session["input_audio_ms"] > 2000


async def test_a_typed_turn_with_a_function_call_in_beta_names_runs_the_tool_as_a_row(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess
) -> None:
    fake.realtime.script(
        {
            "naming": "beta",
            "responses": [
                {
                    "function_calls": [
                        {"name": "slow_count", "arguments": {"n": 2, "delay_s": 0}, "call_id": "c1"}
                    ],
                    "usage": {"input_tokens": 30, "output_tokens": 5},
                },
                {"text": "I counted to two.", "usage": {"input_tokens": 40, "output_tokens": 9}},
            ],
        }
    )
    thread_id = await threads.create()

    async with conversation(server, thread_id) as talk:
        await talk.start()
        await talk.send_json({"type": "text", "text": "Count to two, please."})
        stopped = await talk.next_event("reply_stopped")

    said, started = talk.events[1], talk.events[2]
    assert said == {
        "type": "transcript",
        "messageId": said["messageId"],
        "text": "Count to two, please.",
    }
    assert started == {"type": "reply_started", "messageId": stopped["messageId"]}
    assert stopped["status"] == "complete"
    assert "".join(e["text"] for e in talk.events if e["type"] == "reply_audio") == (
        "I counted to two."
    )
    thread = await settled_thread(threads, thread_id, 2)
    user, reply = thread["messages"]
    assert (user["text"], reply["text"], reply["status"]) == (
        "Count to two, please.",
        "I counted to two.",
        "complete",
    )
    # Both responses wrote the one reply: their tokens add up.
    assert (reply["usage"]["promptTokens"], reply["usage"]["completionTokens"]) == (70, 14)
    assert reply["usage"]["toolCalls"] == 1
    (call,) = thread["toolCalls"]
    assert {k: call[k] for k in ("messageId", "callId", "name", "args", "status", "result")} == {
        "messageId": reply["id"],
        "callId": "c1",
        "name": "slow_count",
        "args": {"n": 2, "delay_s": 0},
        "status": "done",
        "result": {"counted": 2},
    }
    session = provider_session(fake)
    assert session["naming"] == "beta"
    # It said so in session.created, so it was configured in the beta shape.
    (update,) = client_events(fake, "session.update")
    assert "type" not in update["session"]
    assert update["session"]["input_audio_format"] == "pcm16"
    assert update["session"]["input_audio_transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert "response.audio.delta" in session["sent"]
    assert session["function_call_outputs"] == [{"call_id": "c1", "output": '{"counted":2}'}]
    kinds = [
        e["type"] for e in session["client_events"] if e["type"] != "input_audio_buffer.append"
    ]
    assert kinds == [
        "session.update",
        "conversation.item.create",
        "response.create",
        "conversation.item.create",
        "response.create",
    ]


async def test_an_agent_in_pipeline_voice_mode_is_not_relayed(
    fake: FakeOpenAI, client: httpx.AsyncClient, server: ServerProcess
) -> None:
    created = await client.post("/api/threads", json={"agent": "typist"})
    thread_id = created.json()["id"]

    piped = await typed_turn(server, fake, thread_id, "Written answer.")

    assert piped.stopped["status"] == "complete"
    assert fake.realtime.sessions() == []
    assert any(piped.mark in str(request["body"]) for request in fake.requests("chat"))


async def test_a_function_call_that_needs_approval_waits_for_a_person(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess
) -> None:
    fake.realtime.script(
        {
            "responses": [
                {
                    "function_calls": [
                        {"name": "guarded_echo", "arguments": {"text": "hi"}, "call_id": "g1"}
                    ]
                },
                {"text": "Echoed."},
            ]
        }
    )
    thread_id = await threads.create()

    async with conversation(server, thread_id) as talk:
        await talk.start()
        await talk.send_json({"type": "text", "text": "Echo hi."})
        call = await first_tool_call(threads, thread_id, "awaiting_approval")
        approved = await threads.mutation("tool_calls.approve", {"id": call["id"]})
        stopped = await talk.next_event("reply_stopped")

    assert approved == {"id": call["id"], "status": "pending"}
    assert stopped["status"] == "complete"
    thread = await settled_thread(threads, thread_id, 2)
    assert thread["toolCalls"][0]["status"] == "done"
    assert thread["toolCalls"][0]["result"] == {"echo": "hi"}
    assert thread["messages"][1]["text"] == "Echoed."
    assert provider_session(fake)["function_call_outputs"] == [
        {"call_id": "g1", "output": '{"echo":"hi"}'}
    ]


async def test_a_reply_that_speaks_before_and_after_a_function_call_plays_both_responses(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess
) -> None:
    # A 16 kHz client: each response's audio item is resampled and flushed on its own.
    fake.realtime.script(
        {
            "responses": [
                {
                    "text": "Let me count.",
                    "audio_ms": 200,
                    "function_calls": [
                        {"name": "slow_count", "arguments": {"n": 2, "delay_s": 0}, "call_id": "c2"}
                    ],
                },
                {"text": "I counted to two.", "audio_ms": 300},
            ],
        }
    )
    thread_id = await threads.create()

    async with conversation(server, thread_id) as talk:
        ready = await talk.start()
        await talk.send_json({"type": "text", "text": "Count to two, please."})
        stopped = await talk.next_event("reply_stopped")

    assert ready["sampleRate"] == 16000
    assert stopped["status"] == "complete"
    assert "error" not in talk.kinds()
    audio = b"".join(frame for frames in talk.audio.values() for frame in frames)
    assert abs(len(audio) / 32 - 500) < 30
    # The responses' transcripts are set apart by a space.
    captions = "".join(e["text"] for e in talk.events if e["type"] == "reply_audio")
    assert captions == "Let me count. I counted to two."
    thread = await settled_thread(threads, thread_id, 2)
    reply = thread["messages"][1]
    assert (reply["text"], reply["status"]) == ("Let me count. I counted to two.", "complete")
    assert thread["toolCalls"][0]["status"] == "done"
