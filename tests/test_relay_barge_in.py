"""Relay mode, barge-in: speech over a reply `clear`s the client, truncates the provider's
audio item at the milliseconds played, and saves the reply `interrupted` with its transcript cut
in proportion to the audio heard; on the audio socket (`played` reports) and on a phone call
(Twilio's echoed marks).
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from tests.support.agent import Threads
from tests.support.realtime import conversation, silence, spoken_pcm
from tests.support.relay import (
    SLOW_COUNT_SCRIPT,
    client_events,
    cut_during_a_count,
    provider_session,
    relay_server,
    say_turn,
    settled_thread,
)
from tests.support.server import ServerProcess
from tests.support.twilio import (
    call_thread,
    new_call_sid,
    phone_call,
    settled,
    spoken_mulaw,
    stream_token,
)
from tests.support.twilio import silence as mulaw_silence
from tests.support.voice import requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, requires_espeak, relay_server]

STORY = (
    "Once upon a time a fox lived in a quiet wood by a river, and every morning"
    " he walked to the water to watch the boats go by."
)
STORY_MS = 4000


def heard(text: str, played_ms: int, audio_ms: int) -> str:
    """The words of `text` heard after `played_ms` of `audio_ms` (the relay's proportional cut)."""
    words = text.split()
    return " ".join(words[: math.floor(len(words) * played_ms / audio_ms)])


async def test_speech_over_a_reply_clears_truncates_and_saves_what_was_played(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess, tmp_path: Path
) -> None:
    fake.realtime.script(
        {
            "turns": ["Tell me a story", "Stop, tell me about Rome instead"],
            "responses": [{"text": STORY, "audio_ms": STORY_MS}, {"text": "Rome is old."}],
        }
    )
    thread_id = await threads.create()
    question = spoken_pcm(tmp_path, "Tell me a story.")
    interruption = spoken_pcm(tmp_path, "Stop, tell me about Rome instead.")

    async with conversation(server, thread_id) as talk:
        await talk.start()
        story_id = (await say_turn(talk, question))["messageId"]
        await talk.wait_for(lambda e: e["type"] == "reply_audio" and e["seq"] >= 3)
        await talk.wait_for_audio(900)
        await talk.send_json({"type": "played", "messageId": story_id, "ms": 900})
        mark = len(talk.events)
        await talk.say(interruption + silence(1000))
        cut = await talk.next_event("reply_stopped", after=mark)
        answer = await talk.wait_for(
            lambda e: e["type"] == "reply_stopped" and e["messageId"] != story_id, after=mark
        )

    # The story's audio may still be arriving as the user speaks: the events that follow count.
    after = [kind for kind in talk.kinds()[mark:] if kind != "reply_audio"]
    assert after[:3] == ["user_speech_started", "clear", "reply_stopped"]
    assert cut == {"type": "reply_stopped", "messageId": story_id, "status": "interrupted"}
    assert answer["status"] == "complete"
    (truncation,) = provider_session(fake)["truncations"]
    assert truncation["audio_end_ms"] == 900
    assert truncation["content_index"] == 0
    thread = await settled_thread(threads, thread_id, 4)
    texts = [(m["role"], m["text"], m["status"]) for m in thread["messages"]]
    assert texts == [
        ("user", "Tell me a story", "complete"),
        ("assistant", heard(STORY, 900, STORY_MS), "interrupted"),
        ("user", "Stop, tell me about Rome instead", "complete"),
        ("assistant", "Rome is old.", "complete"),
    ]
    story = thread["messages"][1]
    assert story["error"]["code"] == "barge_in"
    assert story["voice"]["interrupted"] is True
    assert thread["messages"][3]["voice"]["interrupted"] is False


async def test_the_cancel_of_a_reply_spoken_over_names_its_response(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess, tmp_path: Path
) -> None:
    # Paced in real time, the story is still being generated when the user speaks over it, so
    # the relay cancels it. The provider may have begun the answer by the time that cancel
    # arrives: a cancel that did not name the story would stop the answer instead.
    fake.realtime.script(
        {
            "turns": ["Tell me a story", "Stop"],
            "responses": [{"text": STORY, "audio_ms": STORY_MS, "speed": 1.0}, {"text": "Fine."}],
        }
    )
    thread_id = await threads.create()
    question = spoken_pcm(tmp_path, "Tell me a story.")
    interruption = spoken_pcm(tmp_path, "Stop.")

    async with conversation(server, thread_id) as talk:
        await talk.start()
        story_id = (await say_turn(talk, question))["messageId"]
        await talk.wait_for_audio(500)
        mark = len(talk.events)
        await talk.say(interruption + silence(1000))
        answer = await talk.wait_for(
            lambda e: e["type"] == "reply_stopped" and e["messageId"] != story_id, after=mark
        )

    assert answer["status"] == "complete"
    story_response = provider_session(fake)["responses"][0]
    assert story_response["status"] == "cancelled"
    cancels = client_events(fake, "response.cancel")
    assert [c.get("response_id") for c in cancels] == [story_response["id"]]


async def test_a_phone_call_is_relayed_and_its_marks_give_the_cut(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess, tmp_path: Path
) -> None:
    fake.realtime.script(
        {
            "turns": ["Tell me a story", "Stop"],
            "responses": [{"text": STORY, "audio_ms": STORY_MS}, {"text": "Fine."}],
        }
    )
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    question = spoken_mulaw(tmp_path, "Tell me a story.")
    interruption = spoken_mulaw(tmp_path, "Stop!")

    async with phone_call(server) as call:
        await call.start(token, call_sid)
        await call.say(mulaw_silence(300) + question + mulaw_silence(1000))
        marks = await call.wait_for_marks(4)
        # Twilio echoes a mark once the audio before it has played: the first three have.
        for mark in marks[:3]:
            await call.echo(mark)
        played_ms = int(marks[2].name.rpartition("@")[2])
        await asyncio.sleep(0.2)
        await call.say(interruption + mulaw_silence(1000))
        await call.wait_for_event("clear")
        thread = await settled(threads, call_sid, 4)
        await call.send("stop", streamSid=call.stream_sid, stop={"callSid": call_sid})
        assert await call.closing() == (1000, "call_ended")

    # The reply's audio went out as 8 kHz μ-law media frames of the stream.
    media = [m for m in call.messages if m["event"] == "media"]
    assert all(m["streamSid"] == call.stream_sid for m in media)
    assert marks[0].audio_bytes > 0
    (truncation,) = provider_session(fake)["truncations"]
    assert truncation["audio_end_ms"] == played_ms
    texts = [(m["role"], m["text"], m["status"]) for m in thread["messages"]]
    assert texts == [
        ("user", "Tell me a story", "complete"),
        ("assistant", heard(STORY, played_ms, STORY_MS), "interrupted"),
        ("user", "Stop", "complete"),
        ("assistant", "Fine.", "complete"),
    ]
    assert (await call_thread(threads, call_sid))["metadata"]["callSid"] == call_sid


async def test_a_barge_in_after_a_function_call_truncates_the_current_audio_item(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess
) -> None:
    fake.realtime.script(
        {
            "responses": [
                {
                    "text": "Let me think.",
                    "audio_ms": 500,
                    "function_calls": [
                        {"name": "slow_count", "arguments": {"n": 1, "delay_s": 0}, "call_id": "c3"}
                    ],
                },
                {"text": STORY, "audio_ms": STORY_MS},
                {"text": "Fine."},
            ]
        }
    )
    thread_id = await threads.create()

    async with conversation(server, thread_id) as talk:
        await talk.start()
        await talk.send_json({"type": "text", "text": "Tell me a story."})
        started = await talk.next_event("reply_started")
        story_id = started["messageId"]
        # The story's audio follows the first response's 500 ms.
        await talk.wait_for(lambda e: e["type"] == "reply_audio" and "Once" in e["text"])
        # Played is at most what was sent: report 1400 ms once that much has come.
        await talk.wait_for_audio(1400)
        await talk.send_json({"type": "played", "messageId": story_id, "ms": 1400})
        mark = len(talk.events)
        await talk.send_json({"type": "text", "text": "Stop."})
        cut = await talk.next_event("reply_stopped", after=mark)
        answer = await talk.wait_for(
            lambda e: e["type"] == "reply_stopped" and e["messageId"] != story_id, after=mark
        )

    assert cut == {"type": "reply_stopped", "messageId": story_id, "status": "interrupted"}
    assert answer["status"] == "complete"
    # 1400 ms of the reply played: the first response's 500, then 900 of the story's item.
    (truncation,) = provider_session(fake)["truncations"]
    assert abs(truncation["audio_end_ms"] - 900) <= 1
    # The story's item, not the first response's 500 ms one; the provider may still be
    # generating the story when the cut reaches it, so its item need not be whole yet.
    assert 900 <= truncation["item_audio_ms"] <= STORY_MS
    thread = await settled_thread(threads, thread_id, 4)
    story = thread["messages"][1]
    assert story["status"] == "interrupted"
    assert story["text"].startswith("Let me think. Once upon")


async def test_a_barge_in_during_a_function_call_cancels_the_call(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess
) -> None:
    fake.realtime.script(SLOW_COUNT_SCRIPT)
    thread_id = await threads.create()

    async with conversation(server, thread_id) as talk:
        await talk.start()
        counted = await cut_during_a_count(talk, threads, thread_id)
    cut, answer, counting_id = counted.cut, counted.answer, counted.counting_id

    assert cut == {"type": "reply_stopped", "messageId": counting_id, "status": "interrupted"}
    assert answer["status"] == "complete"
    thread = await settled_thread(threads, thread_id, 4)
    (call,) = thread["toolCalls"]
    assert call["status"] == "failed"
    assert call["result"] is None
    # The call was cancelled: no output went back to the provider.
    assert provider_session(fake)["function_call_outputs"] == []
    assert thread["messages"][3]["text"] == "Stopped."
