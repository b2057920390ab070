"""The fake Realtime provider (WS /v1/realtime of the fake OpenAI), driven by real clients: the
openai package's realtime client and a plain `websockets` one. Speech is espeak-ng's; every event
the fake sends is checked against the openai package's own GA or beta event types."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.fake_realtime import (
    audio_bytes,
    check_beta,
    check_ga,
    outline,
    realtime,
    spoken_ulaw,
    ws_url,
)
from tests.support.realtime import spoken_pcm
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

QUESTION = "What is the weather like today?"
PCM_BYTES_PER_MS = 48  # 24 kHz 16-bit mono


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this module's espeak-ng recordings are kept."""
    return tmp_path_factory.mktemp("realtime-speech")


def _without_deltas(events: list[dict[str, Any]]) -> list[str]:
    return [t for t in outline(events) if not t.endswith(".delta")]


def _one(events: list[dict[str, Any]], type_: str) -> dict[str, Any]:
    found = [e for e in events if e["type"] == type_]
    assert len(found) == 1, (type_, outline(events))
    return found[0]


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
    started = _one(events, "input_audio_buffer.speech_started")
    stopped = _one(events, "input_audio_buffer.speech_stopped")
    speech_ms = len(speech) // PCM_BYTES_PER_MS
    assert started["audio_start_ms"] <= 300
    assert 300 + speech_ms // 2 < stopped["audio_end_ms"] <= 300 + speech_ms
    said = _one(events, "conversation.item.input_audio_transcription.completed")
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
    assert _one(events, "conversation.item.input_audio_transcription.completed")["transcript"]
    transcript = _one(events, "response.audio_transcript.done")["transcript"]
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
        args = _one(first, "response.function_call_arguments.done")
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
    assert _one(second, "response.output_audio_transcript.done")["transcript"] == (
        "It is sunny in Paris."
    )
    record = fake.realtime.session()
    assert record["function_call_outputs"] == [{"call_id": "call_w1", "output": '{"temp":21}'}]
    assert record["responses"][0]["function_calls"] == ["call_w1"]


async def test_barge_in_cancels_the_response_and_the_truncate_is_recorded(
    fake: FakeOpenAI, speech_dir: Path
) -> None:
    story: dict[str, Any] = {"text": "Once upon a time " * 20, "audio_ms": 20000, "speed": 2.0}
    fake.realtime.script({"turns": ["stop please"], "responses": [story, {"text": "Okay."}]})
    speech = spoken_pcm(speech_dir, "Stop please.", 24000)
    async with realtime(fake) as rt:
        await rt.recv()
        await rt.say("Tell me a story")
        while len(audio_bytes(rt.events)) < 300 * PCM_BYTES_PER_MS:
            await rt.recv()
        item_id = _one(rt.events, "response.output_item.added")["item"]["id"]
        await rt.append(speech + bytes(700 * PCM_BYTES_PER_MS))
        cut = await rt.until("response.done")
        await rt.send(
            "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=300
        )
        after = await rt.until("conversation.item.truncated")
        if "response.done" not in outline(after):
            after += await rt.until("response.done")
        await rt.send("conversation.item.truncate", item_id=item_id, audio_end_ms=999_999)
        too_long = await rt.recv()

    for event in rt.events:
        check_ga(event)
    assert cut[0]["type"] == "input_audio_buffer.speech_started"
    response = cut[-1]["response"]
    assert response["status"] == "cancelled"
    assert response["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert response["output"][0]["status"] == "incomplete"
    heard = response["output"][0]["content"][0]["transcript"]
    assert heard
    assert story["text"].startswith(heard)
    assert heard != story["text"]
    # The turn that interrupted is answered, then the truncate is acknowledged.
    assert _one(after, "response.done")["response"]["status"] == "completed"
    truncated = _one(after, "conversation.item.truncated")
    assert truncated == {**truncated, "item_id": item_id, "content_index": 0, "audio_end_ms": 300}
    assert too_long["type"] == "error"
    assert too_long["error"]["param"] == "audio_end_ms"

    record = fake.realtime.session()
    [truncation] = record["truncations"]
    assert truncation["item_id"] == item_id
    assert truncation["audio_end_ms"] == 300
    assert 300 <= truncation["item_audio_ms"] < 20000
    assert [(r["status"], r["reason"]) for r in record["responses"]] == [
        ("cancelled", "turn_detected"),
        ("completed", None),
    ]


async def test_long_audio_speech_and_client_cancel(fake: FakeOpenAI) -> None:
    fake.realtime.script(
        {
            "responses": [
                {"text": "A long answer " * 30, "audio_ms": 30000, "chunk_ms": 200},
                {"text": "Spoken by espeak.", "sound": "speech"},
                {"audio_ms": 10000, "speed": 1.0},
            ]
        }
    )
    async with realtime(fake) as rt:
        await rt.recv()
        await rt.say("Talk for a while")
        long = await rt.until("response.done")
        await rt.send("response.create")
        spoken = await rt.until("response.done")
        await rt.send("response.create")
        await rt.until("response.output_audio.delta")
        await rt.send("response.cancel")
        cancelled = await rt.until("response.done")
        await rt.send("response.cancel")
        not_active = await rt.recv()

    deltas = [e for e in long if e["type"] == "response.output_audio.delta"]
    assert len(deltas) == 150
    assert len(audio_bytes(long)) == 30000 * PCM_BYTES_PER_MS
    kinds = [e["type"] for e in long]
    first_audio = kinds.index("response.output_audio.delta")
    assert kinds.index("response.output_audio_transcript.delta") < first_audio
    assert len([k for k in kinds if k == "response.output_audio_transcript.delta"]) == 90
    assert long[-1]["response"]["usage"]["output_token_details"]["audio_tokens"] == 600
    voice = audio_bytes(spoken)
    assert len(voice) > 500 * PCM_BYTES_PER_MS
    assert _one(spoken, "response.output_audio_transcript.done")["transcript"] == (
        "Spoken by espeak."
    )
    assert cancelled[-1]["response"]["status_details"]["reason"] == "client_cancelled"
    assert len(audio_bytes(cancelled)) < 10000 * PCM_BYTES_PER_MS
    assert not_active["error"]["code"] == "response_cancel_not_active"


async def test_scripted_and_client_errors_keep_the_socket_open(fake: FakeOpenAI) -> None:
    scripted: dict[str, Any] = {
        "type": "invalid_request_error",
        "code": "bad_thing",
        "message": "Scripted.",
    }
    boom = {"type": "server_error", "message": "Boom"}
    fake.realtime.script(
        {
            "responses": [
                {"error": scripted},
                {"text": "Part of it", "audio_ms": 1000, "error": boom, "error_after_chunks": 3},
                {"text": "Still here.", "speed": 1.0},
            ]
        }
    )
    async with realtime(fake) as rt:
        await rt.recv()
        errors: list[dict[str, Any]] = []
        await rt.send("response.create", event_id="evt_1")
        errors.append(await rt.recv())
        await rt.ws.send("not json")
        errors.append(await rt.recv())
        mistakes: list[tuple[str, dict[str, Any]]] = [
            ("no.such.event", {}),
            ("input_audio_buffer.append", {"audio": "***"}),
            ("input_audio_buffer.commit", {}),
            ("response.cancel", {}),
            ("session.update", {"session": {"instructions": "Be brief."}}),
            ("session.update", {"session": {"type": "realtime", "voice": "ash"}}),
            ("conversation.item.truncate", {"item_id": "item_nope", "audio_end_ms": 0}),
        ]
        for type_, fields in mistakes:
            await rt.send(type_, **fields)
            errors.append(await rt.recv())
        await rt.send("response.create")
        failed = await rt.until("response.done")
        await rt.send("response.create")
        await rt.send("response.create")
        last = await rt.until("response.done")

    for event in rt.events:
        check_ga(event)
    assert all(e["type"] == "error" for e in errors)
    assert errors[0]["error"] == {**scripted, "param": None, "event_id": "evt_1"}
    assert [e["error"]["code"] for e in errors[1:]] == [
        "invalid_json",
        "invalid_value",
        "invalid_value",
        "input_audio_buffer_commit_empty",
        "response_cancel_not_active",
        "missing_required_parameter",
        "unknown_parameter",
        "invalid_value",
    ]
    assert errors[7]["error"]["message"] == "Unknown parameter: 'session.voice'."
    assert errors[6]["error"]["param"] == "session.type"
    assert len([e for e in failed if e["type"] == "response.output_audio.delta"]) == 3
    assert _one(failed, "error")["error"]["message"] == "Boom"
    response = failed[-1]["response"]
    assert response["status"] == "failed"
    assert response["status_details"]["error"] == {
        "type": "server_error",
        "code": None,
        "message": "Boom",
    }
    busy = _one(last, "error")["error"]
    assert busy["code"] == "conversation_already_has_active_response"
    assert last[-1]["response"]["status"] == "completed"


async def test_drop_close_and_silence(fake: FakeOpenAI) -> None:
    fake.realtime.script(
        {"responses": [{"audio_ms": 2000, "drop_after_chunks": 2}]},
        {"responses": [{"audio_ms": 2000, "close_after_chunks": 1, "close_code": 1011}]},
        {"responses": [{"audio_ms": 2000, "silent_after_chunks": 2}]},
        {"silent": True},
    )
    for expected_code in (None, 1011):
        async with realtime(fake) as rt:
            await rt.recv()
            await rt.say("hi")
            with pytest.raises(ConnectionClosed) as closed:
                await rt.until("response.done")
            received = closed.value.rcvd
            assert (received.code if received else None) == expected_code
            assert len(audio_bytes(rt.events)) == (2 if expected_code is None else 1) * 4800

    async with realtime(fake) as rt:
        await rt.recv()
        await rt.say("hi")
        while len(audio_bytes(rt.events)) < 2 * 4800:
            await rt.recv()
        assert await rt.quiet(0.3) == []
        assert "response.done" not in outline(rt.events)
        await rt.send("response.create")
        assert await rt.quiet(0.3) == []
        fake.realtime.inject(
            {
                "type": "error",
                "event_id": "event_x",
                "error": {"type": "server_error", "message": "late"},
            }
        )
        assert (await rt.recv())["error"]["message"] == "late"
        fake.realtime.drop()
        with pytest.raises(ConnectionClosed):
            await rt.recv()

    async with realtime(fake) as rt:
        assert await rt.quiet(0.3) == []  # not even session.created

    sessions = fake.realtime.wait_for(lambda s: len(s) == 4 and not any(r["open"] for r in s))
    assert [r["close_code"] for r in sessions] == [1006, 1011, 1006, 1000]
    assert sessions[3]["sent"] == []
    assert outline(sessions[2]["client_events"])[-1] == "response.create"


async def test_handshake_refusals_and_the_control_api(fake: FakeOpenAI) -> None:
    refusals = [
        (ws_url(fake), {}, 401),
        (ws_url(fake).split("?")[0], {"Authorization": "Bearer test"}, 400),
        (ws_url(fake), {"Authorization": "Bearer test"}, 429),
    ]
    fake.realtime.script({"reject": {"status": 429, "message": "Too many sessions"}})
    for url, headers, status in refusals:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == status
        body = json.loads(refused.value.response.body or b"{}")
        assert set(body["error"]) == {"message", "type", "param", "code"}

    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        queued = await http.post("/_control/realtime", json=[{"naming": "beta", "times": 2}])
        assert queued.json() == {"queued": 1, "pending": 1}
        typo = await http.post("/_control/realtime", json={"nameing": "beta"})
        assert typo.status_code == 422
        assert "nameing" in typo.json()["error"]["message"]
        async with realtime(fake) as rt:
            assert (await rt.recv())["session"]["voice"] == "alloy"
            event = {"type": "rate_limits.updated", "event_id": "e1", "rate_limits": []}
            injected = await http.post("/_control/realtime/inject", json={"event": event})
            assert injected.status_code == 200
            assert (await rt.recv()) == event
        state = (await http.get("/_control/realtime")).json()
        assert [p["remaining"] for p in state["pending"]] == [1]
        assert [s["naming"] for s in state["sessions"]] == ["beta"]
        assert (await http.delete("/_control/realtime")).json() == {"ok": True}
        assert (await http.get("/_control/realtime")).json() == {"pending": [], "sessions": []}
        missing = await http.post("/_control/realtime/inject", json={"drop": True})
        assert missing.status_code == 404


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
    assert _one(third, "response.output_audio_transcript.done")["transcript"] == "You said: third"
