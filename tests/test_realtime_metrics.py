"""Live conversation metrics: each reply of a live turn keeps its `voice` row (DESIGN §9), the
thread sums the audio in and out, and `thread show` prints the turn's latency.

Real speech from espeak-ng over a real WebSocket to a real server, the fake provider answering.
Latencies depend on the machine, so only their shape is asserted: present, not negative, and
adding up to the whole wait.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import Threads, marker
from tests.support.cli import invoke, server_vars
from tests.support.realtime import (
    conversation,
    interrupt_at,
    script_barge_in,
    silence,
    spoken_pcm,
    typed_turn,
)
from tests.support.server import ServerProcess
from tests.support.voice import requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, requires_espeak, pytest.mark.agent_server()]

SENTENCES = ["It is sunny in Paris.", "Enjoy your day."]
ANSWER = " ".join(SENTENCES)
LONG_ANSWER = (
    "The first sentence is here. The second sentence follows it now."
    " A third one comes after that. The fourth sentence ends the reply."
)
SECONDS_PER_CHAR = 0.06  # the fake provider's speech length
PARTS = ("endOfSpeechToTranscriptMs", "transcriptToFirstTokenMs", "firstTokenToFirstAudioMs")


def assert_latencies_add_up(voice: dict[str, Any]) -> None:
    """Every latency is a whole number of ms ≥ 0, and the parts make up voiceToVoiceMs (each
    is rounded on its own, so within a few ms)."""
    for key in (*PARTS, "voiceToVoiceMs"):
        assert isinstance(voice[key], int), (key, voice)
        assert voice[key] >= 0, (key, voice)
    assert abs(sum(voice[key] for key in PARTS) - voice["voiceToVoiceMs"]) <= 3, voice


async def test_a_spoken_turn_saves_its_voice_metrics_on_the_reply(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess, tmp_path: Path
) -> None:
    mark = marker()
    fake.script(
        {"kind": "transcription", "transcript": f"What is the weather like today {mark}?"},
        {"match": mark, "text": ANSWER},
    )
    thread_id = await threads.create()
    speech = spoken_pcm(tmp_path, "What is the weather like today?")

    async with conversation(server, thread_id) as talk:
        await talk.start()
        await talk.say(silence(300) + speech + silence(1000))
        stopped = await talk.next_event("reply_stopped")

    thread = await threads.get(thread_id)
    question, reply = thread["messages"]
    assert (reply["id"], stopped["status"]) == (stopped["messageId"], "complete")
    assert question["voice"] is None
    voice = reply["voice"]
    assert set(voice) == {
        *PARTS,
        "voiceToVoiceMs",
        "audioInSeconds",
        "audioOutSeconds",
        "interrupted",
    }
    assert_latencies_add_up(voice)
    assert voice["interrupted"] is False
    # The turn's audio is the user message's recording; the audio out is every frame sent.
    assert voice["audioInSeconds"] == question["usage"]["audioInSeconds"] > 0
    spoken = sum(len(sentence) * SECONDS_PER_CHAR for sentence in SENTENCES)
    assert voice["audioOutSeconds"] == pytest.approx(spoken, abs=0.02)
    assert thread["usage"]["audioInSeconds"] == voice["audioInSeconds"]
    assert thread["usage"]["audioOutSeconds"] == voice["audioOutSeconds"]


async def test_a_reply_cut_by_barge_in_is_saved_as_interrupted(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess, tmp_path: Path
) -> None:
    barge = script_barge_in(fake, tmp_path, LONG_ANSWER)
    thread_id = await threads.create()

    async with conversation(server, thread_id) as talk:
        reply_id = await interrupt_at(talk, barge, 2)

    thread = await threads.get(thread_id)
    cut, answer = thread["messages"][1], thread["messages"][3]
    assert (cut["id"], cut["status"], answer["status"]) == (reply_id, "interrupted", "complete")
    assert cut["voice"]["interrupted"] is True
    assert_latencies_add_up(cut["voice"])
    assert 0 < cut["voice"]["audioOutSeconds"] < len(LONG_ANSWER) * SECONDS_PER_CHAR
    assert answer["voice"]["interrupted"] is False
    assert_latencies_add_up(answer["voice"])
    audio_out = cut["voice"]["audioOutSeconds"] + answer["voice"]["audioOutSeconds"]
    assert thread["usage"]["audioOutSeconds"] == pytest.approx(audio_out, abs=0.002)


async def test_thread_show_prints_the_voice_metrics_of_a_live_turn(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess
) -> None:
    thread_id = await threads.create()
    await typed_turn(server, fake, thread_id)

    thread = await threads.get(thread_id)
    _question, reply = thread["messages"]
    voice = reply["voice"]
    assert voice["audioInSeconds"] == 0.0  # a typed turn
    assert_latencies_add_up(voice)
    result = invoke(["thread", "show", thread_id], env=server_vars(server))
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    line = (
        f"  voice {voice['voiceToVoiceMs']} ms (transcript {voice['endOfSpeechToTranscriptMs']} ms"
        f" + first token {voice['transcriptToFirstTokenMs']} ms"
        f" + first audio {voice['firstTokenToFirstAudioMs']} ms),"
        f" 0.0 s in, {voice['audioOutSeconds']:.1f} s out"
    )
    lines = result.stdout.splitlines()
    heading = [n for n, text in enumerate(lines) if text.startswith("assistant (complete) ")]
    assert lines[heading[0]].startswith(f"assistant (complete) {reply['id']}: ")
    assert lines[heading[0] + 1 :] == [line, "Hello there."]
