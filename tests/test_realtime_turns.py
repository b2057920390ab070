"""Live conversation: spoken turns found by the server's VAD, transcribed, answered with audio
frames and saved in the thread, and typed turns in the same session.

Real speech from espeak-ng goes over a real WebSocket to a real server; the transcripts and
replies come from the fake provider, matched on a marker of each test's own.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.agent import Threads, feed, marker, snapshot
from tests.support.realtime import (
    FRAME_BYTES,
    SPOKEN_TURN_OF_TWO_SENTENCES,
    conversation,
    silence,
    spoken_pcm,
    typed_turn,
)
from tests.support.server import ServerProcess
from tests.support.voice import requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI
from voicestack.voice.realtime.codec import pcm16_to_mulaw

pytestmark = [pytest.mark.anyio, requires_espeak, pytest.mark.agent_server()]

ANSWER = "It is sunny in Paris. Enjoy your day."
SECONDS_PER_CHAR = 0.06  # the fake provider's speech length


def spoken_ms(sentence: str) -> float:
    """How long the fake provider's speech of `sentence` lasts."""
    return len(sentence) * SECONDS_PER_CHAR * 1000


async def test_a_spoken_turn_is_transcribed_answered_with_audio_and_saved(
    fake: FakeOpenAI,
    client: httpx.AsyncClient,
    threads: Threads,
    server: ServerProcess,
    tmp_path: Path,
) -> None:
    mark = marker()
    transcript = f"What is the weather like today {mark}?"
    fake.script(
        {"kind": "transcription", "transcript": transcript},
        {"match": mark, "text": ANSWER},
    )
    thread_id = await threads.create()
    speech = spoken_pcm(tmp_path, "What is the weather like today?")

    async with conversation(server, thread_id) as talk:
        ready = await talk.start()
        await talk.say(silence(300) + speech + silence(1000))
        stopped = await talk.next_event("reply_stopped")

    said = [e for e in talk.events if e["type"] == "transcript"]
    assert len(said) == 1
    message_id, reply_id = said[0]["messageId"], talk.events[-1]["messageId"]
    assert ready == {"type": "ready", "sampleRate": 16000}
    assert talk.kinds() == SPOKEN_TURN_OF_TWO_SENTENCES
    assert said[0] == {"type": "transcript", "messageId": message_id, "text": transcript}
    assert talk.events[4] == {"type": "reply_started", "messageId": reply_id}
    audio_events = talk.events[5:7]
    # Each sentence's `ms` is the length of the audio frames that follow it.
    lengths = [sum(map(len, talk.audio_after(event))) / 32 for event in audio_events]
    assert audio_events == [
        {
            "type": "reply_audio",
            "messageId": reply_id,
            "seq": 1,
            "text": "It is sunny in Paris.",
            "ms": lengths[0],
        },
        {
            "type": "reply_audio",
            "messageId": reply_id,
            "seq": 2,
            "text": "Enjoy your day.",
            "ms": lengths[1],
        },
    ]
    assert stopped == {"type": "reply_stopped", "messageId": reply_id, "status": "complete"}
    for event in audio_events:
        frames = talk.audio_after(event)
        assert all(len(frame) <= FRAME_BYTES for frame in frames)
        # 16 kHz 16-bit: 32 bytes a millisecond, within a frame of resampling.
        assert abs(sum(map(len, frames)) / 32 - spoken_ms(event["text"])) < 20

    thread = await threads.get(thread_id)
    rows = [(m["id"], m["role"], m["status"], m["text"]) for m in thread["messages"]]
    assert rows == [
        (message_id, "user", "complete", transcript),
        (reply_id, "assistant", "complete", ANSWER),
    ]
    assert thread["messages"][0]["audioFileId"].startswith("file_")
    async with feed(client, thread_id) as stream:
        shown, _ready = await snapshot(stream)
    assert [(e.json["id"], e.json["status"]) for e in shown if e.event == "message"] == [
        (message_id, "complete"),
        (reply_id, "complete"),
    ]


async def test_a_typed_turn_is_answered_with_audio(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess
) -> None:
    thread_id = await threads.create()
    turn = await typed_turn(server, fake, thread_id)
    talk, mark, stopped = turn.talk, turn.mark, turn.stopped

    assert talk.kinds() == ["ready", "transcript", "reply_started", "reply_audio", "reply_stopped"]
    assert talk.events[1]["text"] == f"Hi {mark}"
    assert talk.events[3]["text"] == "Hello there."
    assert sum(map(len, talk.audio_after(talk.events[3]))) > 0
    assert stopped["status"] == "complete"
    thread = await threads.get(thread_id)
    assert [(m["role"], m["text"]) for m in thread["messages"]] == [
        ("user", f"Hi {mark}"),
        ("assistant", "Hello there."),
    ]


async def test_a_reply_stops_once_its_audio_has_played(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess
) -> None:
    answer = "Hello there, my friend."
    turn = await typed_turn(server, fake, await threads.create(), answer)
    talk = turn.talk

    assert turn.stopped["status"] == "complete"
    assert talk.first_audio_at is not None
    stopped_at = talk.received_at[talk.events.index(turn.stopped)]
    # Audio goes out 0.3 s ahead of real time; the reply is the session's until it has played.
    assert stopped_at - talk.first_audio_at >= len(answer) * SECONDS_PER_CHAR - 0.05


async def test_mulaw_at_8_khz_is_heard_and_answered_in_mulaw(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess, tmp_path: Path
) -> None:
    mark = marker()
    fake.script(
        {"kind": "transcription", "transcript": f"Hello {mark}"},
        {"match": mark, "text": "Hello there."},
    )
    thread_id = await threads.create()
    speech = pcm16_to_mulaw(spoken_pcm(tmp_path, "What is the weather like today?", 8000))

    async with conversation(server, thread_id) as talk:
        await talk.start(8000, "mulaw")
        await talk.say(bytes([0xFF]) * 2400 + speech + bytes([0xFF]) * 8000, frame_bytes=160)
        spoken = await talk.next_event("reply_audio")
        await talk.next_event("reply_stopped")

    frames = talk.audio_after(spoken)
    assert all(len(frame) <= 160 for frame in frames)  # 20 ms of 8 kHz μ-law
    assert abs(sum(map(len, frames)) / 8 - spoken_ms("Hello there.")) < 20
