"""The fake Realtime provider (WS /v1/realtime of the fake OpenAI) hearing turns and answering
them, driven by real clients: the openai package's realtime client and a plain `websockets` one.
Speech is espeak-ng's; every event the fake sends is checked against the openai package's own GA
or beta event types."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.fake_realtime import (
    audio_bytes,
    check_beta,
    check_ga,
    outline,
    realtime,
    spoken_ulaw,
)
from tests.support.realtime import spoken_pcm
from tests.support.realtime_events import PCM_BYTES_PER_MS, one_event
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio


QUESTION = "What is the weather like today?"


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this module's espeak-ng recordings are kept."""
    return tmp_path_factory.mktemp("realtime-speech")


def _without_deltas(events: list[dict[str, Any]]) -> list[str]:
    return [t for t in outline(events) if not t.endswith(".delta")]


async def test_spoken_turn_through_the_openai_client(fake: FakeOpenAI, speech_dir: Path) -> None:
    fake.realtime.script(
        {"turns": [QUESTION], "responses": [{"text": "It is sunny and warm.", "audio_ms": 1500}]}
    )
    speech = spoken_pcm(speech_dir, QUESTION, 24000)
    pcm = bytes(300 * PCM_BYTES_PER_MS) + speech + bytes(1000 * PCM_BYTES_PER_MS)
    events: list[dict[str, Any]] = []
    async with (
        openai.AsyncOpenAI(base_url=fake.api_base, api_key="test") as client,
        client.realtime.connect(model="gpt-realtime") as conn,
    ):
        transcription = {"model": "gpt-4o-mini-transcribe"}
        session: Any = {"type": "realtime", "audio": {"input": {"transcription": transcription}}}
        await conn.session.update(session=session)
        for i in range(0, len(pcm), 4800):
            chunk = base64.b64encode(pcm[i : i + 4800]).decode("ascii")
            await conn.input_audio_buffer.append(audio=chunk)
        async with asyncio.timeout(10):
            while not events or events[-1]["type"] != "response.done":
                events.append(json.loads(await conn.recv_bytes()))

    for event in events:
        check_ga(event)
    assert _without_deltas(events) == [
        "session.created",
        "session.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    started = one_event(events, "input_audio_buffer.speech_started")
    stopped = one_event(events, "input_audio_buffer.speech_stopped")
    speech_ms = len(speech) // PCM_BYTES_PER_MS
    assert started["audio_start_ms"] <= 300
    assert 300 + speech_ms // 2 < stopped["audio_end_ms"] <= 300 + speech_ms
    said = one_event(events, "conversation.item.input_audio_transcription.completed")
    assert said["transcript"] == QUESTION
    assert started["item_id"] == stopped["item_id"] == said["item_id"]
    deltas = [e["delta"] for e in events if e["type"].endswith("transcription.delta")]
    assert "".join(deltas) == QUESTION

    spoken = [e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"]
    assert "".join(spoken) == "It is sunny and warm."
    assert len(spoken) == 5
    assert len(audio_bytes(events)) == 1500 * PCM_BYTES_PER_MS
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["status"] == "completed"
    assert done["output"][0]["content"][0]["transcript"] == "It is sunny and warm."
    usage = done["usage"]
    assert usage["output_token_details"] == {"text_tokens": 5, "audio_tokens": 30}
    assert usage["input_token_details"]["audio_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]

    record = fake.realtime.session()
    assert record["headers"]["authorization"] == "Bearer test"
    assert record["model"] == "gpt-realtime"
    assert record["naming"] == "ga"
    assert outline(record["client_events"]) == ["session.update", "input_audio_buffer.append"]
    assert record["input_audio_ms"] == len(pcm) // PCM_BYTES_PER_MS
    assert record["sent"] == [e["type"] for e in events]
    assert record["responses"][0]["status"] == "completed"


async def test_beta_names_and_mulaw_audio(fake: FakeOpenAI, speech_dir: Path) -> None:
    ulaw = spoken_ulaw(speech_dir, QUESTION)
    async with realtime(fake, beta=True) as rt:
        created = await rt.recv()
        assert created["session"]["input_audio_format"] == "pcm16"
        session = {
            "input_audio_format": "g711_ulaw",
            "output_audio_format": "g711_ulaw",
            "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
        }
        await rt.send("session.update", session=session)
        updated = await rt.recv()
        assert updated["session"]["turn_detection"]["silence_duration_ms"] == 400
        silence = b"\xff" * 8  # μ-law silence, per ms
        await rt.append(silence * 200 + ulaw + silence * 800, chunk_bytes=800)
        events = await rt.until("response.done")

    for event in rt.events:
        check_beta(event)
    names = set(outline(events))
    assert {"response.audio.delta", "response.audio_transcript.delta"} <= names
    assert {"response.audio.done", "response.audio_transcript.done"} <= names
    assert "conversation.item.created" in names
    assert not any("output_audio" in n or n.startswith("conversation.item.added") for n in names)
    assert not any(n == "conversation.item.done" for n in names)
    assert one_event(events, "conversation.item.input_audio_transcription.completed")["transcript"]
    transcript = one_event(events, "response.audio_transcript.done")["transcript"]
    assert transcript == "You said: hello"  # the default turn and reply
    assert len(audio_bytes(events, beta=True)) == 60 * len(transcript) * 8  # 8 kHz μ-law
    assert fake.realtime.session()["naming"] == "beta"

    fake.realtime.script({"naming": "beta"})
    async with realtime(fake) as rt:
        assert "input_audio_format" in (await rt.recv())["session"]
        await rt.send("session.update", session={"type": "realtime", "instructions": "Hi."})
        refused = (await rt.recv())["error"]
    assert (refused["code"], refused["param"]) == ("unknown_parameter", "session.type")

    async with realtime(fake) as rt:
        await rt.recv()
        pcmu = {"type": "audio/pcmu"}
        audio = {"input": {"format": pcmu}, "output": {"format": pcmu}}
        await rt.send("session.update", session={"type": "realtime", "audio": audio})
        assert (await rt.recv())["session"]["audio"]["output"]["format"] == pcmu
        await rt.append(silence * 200 + ulaw + silence * 800, chunk_bytes=800)
        ga = await rt.until("response.done")
    assert outline(ga).count("input_audio_buffer.speech_started") == 1
    assert len(audio_bytes(ga)) == 60 * len("You said: hello") * 8


async def test_function_call_round_trip(fake: FakeOpenAI) -> None:
    call = {"name": "get_weather", "arguments": {"city": "Paris"}, "call_id": "call_w1"}
    fake.realtime.script(
        {"responses": [{"function_calls": [call]}, {"text": "It is sunny in Paris."}]}
    )
    async with realtime(fake) as rt:
        await rt.recv()
        await rt.say("Weather in Paris?")
        first = await rt.until("response.done")
        assert _without_deltas(first) == [
            "conversation.item.added",
            "conversation.item.done",
            "response.created",
            "response.output_item.added",
            "conversation.item.added",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        pieces = [e["delta"] for e in first if e["type"].endswith("arguments.delta")]
        assert len(pieces) >= 2
        assert "".join(pieces) == '{"city":"Paris"}'
        args = one_event(first, "response.function_call_arguments.done")
        assert (args["name"], args["call_id"]) == ("get_weather", "call_w1")
        output = first[-1]["response"]["output"]
        assert [(o["type"], o["status"]) for o in output] == [("function_call", "completed")]
        assert await rt.quiet(0.3) == []  # it waits for the function's result

        result = {"type": "function_call_output", "call_id": "nope", "output": "{}"}
        await rt.send("conversation.item.create", item=result)
        assert (await rt.recv())["error"]["param"] == "item.call_id"
        result = {"type": "function_call_output", "call_id": "call_w1", "output": '{"temp":21}'}
        await rt.send("conversation.item.create", item=result)
        await rt.send("response.create")
        second = await rt.until("response.done")

    for event in rt.events:
        check_ga(event)
    assert second[0]["item"]["type"] == "function_call_output"
    assert one_event(second, "response.output_audio_transcript.done")["transcript"] == (
        "It is sunny in Paris."
    )
    record = fake.realtime.session()
    assert record["function_call_outputs"] == [{"call_id": "call_w1", "output": '{"temp":21}'}]
    assert record["responses"][0]["function_calls"] == ["call_w1"]


async def test_manual_turns_without_vad(fake: FakeOpenAI, speech_dir: Path) -> None:
    failure = {"code": "audio_unintelligible", "message": "Could not hear that."}
    fake.realtime.script(
        {
            "transcribe": "always",
            "turns": ["first words", {"fail": failure}, {"transcript": "third", "late": True}],
        }
    )
    speech = spoken_pcm(speech_dir, "Hello there.", 24000)
    async with realtime(fake) as rt:
        await rt.recv()
        session = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        await rt.send("session.update", session=session)
        await rt.recv()
        await rt.append(speech)
        await rt.send("input_audio_buffer.commit")
        first = await rt.until("conversation.item.input_audio_transcription.completed")
        await rt.append(speech)
        await rt.send("input_audio_buffer.clear")
        assert (await rt.recv())["type"] == "input_audio_buffer.cleared"
        await rt.append(speech)
        await rt.send("input_audio_buffer.commit")
        second = await rt.until("conversation.item.input_audio_transcription.failed")
        assert await rt.quiet(0.3) == []  # no response without VAD
        await rt.append(speech)
        await rt.send("input_audio_buffer.commit")
        await rt.until("conversation.item.done")
        await rt.send("response.create")
        third = await rt.until("response.done")

    for event in rt.events:
        check_ga(event)
    assert "input_audio_buffer.speech_started" not in outline(rt.events)
    assert _without_deltas(first) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert first[-1]["transcript"] == "first words"
    assert first[-1]["usage"]["seconds"] == pytest.approx(len(speech) / 48000, abs=0.01)
    assert second[-1]["error"]["code"] == "audio_unintelligible"
    assert second[0]["previous_item_id"] == first[0]["item_id"]
    assert (
        one_event(third, "response.output_audio_transcript.done")["transcript"] == "You said: third"
    )
