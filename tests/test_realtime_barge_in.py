"""Barge-in: speech over a reply stops it, clears the client's audio, keeps only what was heard,
and becomes the next turn; a short sound over a reply changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.agent import Threads, chat_bodies, marker
from tests.support.realtime import (
    ask,
    conversation,
    interrupt_at,
    script_barge_in,
    silence,
    spoken_pcm,
)
from tests.support.server import ServerProcess
from tests.support.voice import requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, requires_espeak, pytest.mark.agent_server()]

SENTENCES = [
    "The first sentence is here.",
    "The second sentence follows it now.",
    "A third one comes after that.",
    "The fourth sentence ends the reply.",
]
ANSWER = " ".join(SENTENCES)
SHORT_ANSWER = "It is sunny today. Enjoy it."
SECONDS_PER_CHAR = 0.06  # the fake provider's speech length


def spoken_ms(sentence: str) -> float:
    """How long the fake provider's speech of `sentence` lasts."""
    return len(sentence) * SECONDS_PER_CHAR * 1000


async def test_speech_over_a_reply_interrupts_it_keeping_what_was_heard(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess, tmp_path: Path
) -> None:
    barge = script_barge_in(fake, tmp_path, ANSWER)
    first, second = barge.first, barge.second
    thread_id = await threads.create()

    async with conversation(server, thread_id) as talk:
        reply_id = await ask(talk, barge.question)
        await talk.wait_for(lambda e: e["type"] == "reply_audio" and e["seq"] == 2)
        # 60% into the second sentence: its first 3 words of 6 were heard.
        played = spoken_ms(SENTENCES[0]) + 0.6 * spoken_ms(SENTENCES[1])
        await talk.send_json({"type": "played", "messageId": reply_id, "ms": int(played)})
        mark = len(talk.events)
        await talk.say(barge.interruption + silence(1000))
        stopped = await talk.next_event("reply_stopped", after=mark)
        answered = await talk.wait_for(
            lambda e: e["type"] == "reply_stopped" and e["messageId"] != reply_id, after=mark
        )

    # Sentences of the first reply may still be announced while the interruption is heard.
    after = [
        e["type"]
        for e in talk.events[mark:]
        if not (e["type"] == "reply_audio" and e["messageId"] == reply_id)
    ]
    assert after == [
        "user_speech_started",
        "clear",
        "reply_stopped",
        "user_speech_stopped",
        "transcript",
        "reply_started",
        "reply_audio",
        "reply_stopped",
    ]
    assert stopped == {"type": "reply_stopped", "messageId": reply_id, "status": "interrupted"}
    assert answered["status"] == "complete"
    heard = "The first sentence is here. The second sentence"
    thread = await threads.get(thread_id)
    assert [(m["role"], m["status"], m["text"]) for m in thread["messages"]] == [
        ("user", "complete", f"Tell me a story {first}"),
        ("assistant", "interrupted", heard),
        ("user", "complete", f"Stop, tell me about Rome {second}"),
        ("assistant", "complete", "Rome is old."),
    ]
    assert thread["messages"][1]["error"]["code"] == "barge_in"
    (body,) = chat_bodies(fake, second)
    assert body["messages"][-3:] == [
        {"role": "user", "content": f"Tell me a story {first}"},
        {"role": "assistant", "content": heard},
        {"role": "user", "content": f"Stop, tell me about Rome {second}"},
    ]


async def test_a_120_ms_sound_over_a_reply_does_not_interrupt_it(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess, tmp_path: Path
) -> None:
    mark = marker()
    fake.script({"match": mark, "text": SHORT_ANSWER})
    thread_id = await threads.create()
    speech = spoken_pcm(tmp_path, "What is the weather like today?")
    middle = len(speech) // 2 // 2 * 2
    cough = speech[middle : middle + 120 * 32]  # 120 ms from the middle of real speech

    async with conversation(server, thread_id) as talk:
        await talk.start()
        await talk.send_json({"type": "text", "text": f"Tell me a story {mark}"})
        started = await talk.next_event("reply_started")
        await talk.wait_for(lambda e: e["type"] == "reply_audio" and e["seq"] == 1)
        await talk.say(silence(200) + cough + silence(1000))
        stopped = await talk.next_event("reply_stopped")

    assert "clear" not in talk.kinds()
    assert "transcript" not in talk.kinds()[2:]
    assert stopped == {
        "type": "reply_stopped",
        "messageId": started["messageId"],
        "status": "complete",
    }
    thread = await threads.get(thread_id)
    assert [(m["role"], m["status"]) for m in thread["messages"]] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert thread["messages"][1]["text"] == SHORT_ANSWER


async def test_without_played_reports_the_cut_is_estimated_from_real_time_playback(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess, tmp_path: Path
) -> None:
    barge = script_barge_in(fake, tmp_path, ANSWER)
    thread_id = await threads.create()

    async with conversation(server, thread_id) as talk:
        # The third sentence is announced once the first two have been sent, 0.3 s ahead of
        # real time: by then the first sentence has played, the second not yet.
        reply_id = await interrupt_at(talk, barge, 3)

    reply = (await threads.get(thread_id))["messages"][1]
    assert (reply["id"], reply["status"]) == (reply_id, "interrupted")
    assert reply["text"].startswith(SENTENCES[0])
    assert ANSWER.startswith(reply["text"])
    assert len(reply["text"]) < len(" ".join(SENTENCES[:3]))
