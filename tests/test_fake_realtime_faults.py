"""The fake Realtime provider's interruptions, cancels, errors, drops and its control API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.fake_realtime import (
    audio_bytes,
    check_ga,
    outline,
    realtime,
    ws_url,
)
from tests.support.realtime import spoken_pcm
from tests.support.realtime_events import PCM_BYTES_PER_MS, one_event
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this module's espeak-ng recordings are kept."""
    return tmp_path_factory.mktemp("realtime-speech")


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
        item_id = one_event(rt.events, "response.output_item.added")["item"]["id"]
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
    kinds = [event["type"] for event in cut]
    started = kinds.index("input_audio_buffer.speech_started")
    # Reply deltas already on their way may come first (the reply streams at twice real time).
    assert all(kind.startswith("response.output_") for kind in kinds[:started])
    response = cut[-1]["response"]
    assert response["status"] == "cancelled"
    assert response["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert response["output"][0]["status"] == "incomplete"
    heard = response["output"][0]["content"][0]["transcript"]
    assert heard
    assert story["text"].startswith(heard)
    assert heard != story["text"]
    # The turn that interrupted is answered, then the truncate is acknowledged.
    assert one_event(after, "response.done")["response"]["status"] == "completed"
    truncated = one_event(after, "conversation.item.truncated")
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
        started = await rt.until("response.output_audio.delta")
        # A cancel naming a response that already ended leaves the one in progress alone.
        await rt.send("response.cancel", response_id=spoken[-1]["response"]["id"])
        stale = await rt.until("error")
        await rt.send("response.cancel", response_id=started[-1]["response_id"])
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
    assert one_event(spoken, "response.output_audio_transcript.done")["transcript"] == (
        "Spoken by espeak."
    )
    assert cancelled[-1]["response"]["status_details"]["reason"] == "client_cancelled"
    assert len(audio_bytes(cancelled)) < 10000 * PCM_BYTES_PER_MS
    assert not_active["error"]["code"] == "response_cancel_not_active"
    assert stale[-1]["error"]["code"] == "response_cancel_not_active"
    assert "response.done" not in [e["type"] for e in stale]


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
    assert one_event(failed, "error")["error"]["message"] == "Boom"
    response = failed[-1]["response"]
    assert response["status"] == "failed"
    assert response["status_details"]["error"] == {
        "type": "server_error",
        "code": None,
        "message": "Boom",
    }
    busy = one_event(last, "error")["error"]
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
