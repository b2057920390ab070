"""Phone calls through Twilio (DESIGN §10), the call: its Media Streams socket becomes a live
conversation on a new thread, marked sentence by sentence, cut to what the caller heard on
barge-in; its one-time token is spent once, by that call only; calls are capped."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.agent import Threads, chat_bodies, marker
from tests.support.server import ServerProcess
from tests.support.twilio import (
    AUTH_TOKEN,
    CALLED,
    CALLER,
    FRAME,
    PUBLIC_URL,
    SENTENCES,
    WEATHER_ANSWER,
    call_params,
    call_thread,
    new_call_sid,
    phone_call,
    script_weather,
    settled,
    short_call,
    silence,
    spoken_mulaw,
    stream_token,
    thread_count,
    twilio_signature,
    weather_call,
)
from tests.support.voice import requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.agent_server("--public-url", PUBLIC_URL, "--twilio-auth-token", AUTH_TOKEN),
]


# -- the media stream -------------------------------------------------------------------------


async def test_a_started_call_is_a_thread_with_the_call_in_its_metadata(
    server: ServerProcess, threads: Threads
) -> None:
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    await short_call(server, call_sid, token)

    thread = await call_thread(threads, call_sid)
    assert thread["title"] == f"Call from {CALLER}"
    assert thread["metadata"] == {
        "channel": "twilio",
        "callSid": call_sid,
        "from": CALLER,
        "to": CALLED,
    }
    assert thread["messages"] == []


@pytest.mark.agent_server(
    "--public-url", PUBLIC_URL, "--twilio-auth-token", AUTH_TOKEN, "--twilio-user", "front.desk"
)
async def test_a_calls_thread_is_owned_by_the_twilio_user_given(
    server: ServerProcess, threads: Threads
) -> None:
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    await short_call(server, call_sid, token)

    thread = await call_thread(threads, call_sid)
    conn = apsw.Connection(str(server.db_path), flags=apsw.SQLITE_OPEN_READONLY)
    owners = conn.execute(
        "SELECT name, role FROM auth_users WHERE id = ?", (thread["owner"],)
    ).fetchall()
    assert owners == [("front.desk", "user")]


@requires_espeak
async def test_a_turn_is_answered_with_media_and_a_mark_after_each_sentence(
    fake: FakeOpenAI, server: ServerProcess, threads: Threads, tmp_path: Path
) -> None:
    transcript = script_weather(fake)
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)

    answered = await weather_call(server, threads, call_sid, token, tmp_path)

    call, thread, marks, closed = answered.call, answered.thread, answered.marks, answered.closed
    assert closed == (1000, "call_ended")
    reply = thread["messages"][1]
    # A mark after each sentence, named after the reply and the ms of its audio sent so far.
    assert [m.name for m in marks] == [
        f"{reply['id']}@{-(-m.audio_bytes // 8)}" for m in call.marks[:2]
    ]
    assert marks[-1].audio_bytes == len(call.audio)
    assert 0 < marks[0].audio_bytes < marks[1].audio_bytes
    assert {m["event"] for m in call.messages} == {"media", "mark"}
    assert {m["streamSid"] for m in call.messages} == {call.stream_sid}
    # Frames of 20 ms of 8 kHz μ-law (the last of a sentence may be shorter).
    sizes = {len(base64.b64decode(m["media"]["payload"])) for m in call.messages[:10]}
    assert sizes == {FRAME}
    assert [(m["role"], m["status"], m["text"]) for m in thread["messages"]] == [
        ("user", "complete", transcript),
        ("assistant", "complete", WEATHER_ANSWER),
    ]
    # The call's thread is the --twilio-user's (default `twilio`), who speaks its turns.
    assert thread["messages"][0]["author"] == thread["owner"]
    assert thread["messages"][0]["authorName"] == "twilio"
    assert thread["messages"][1]["voice"]["audioOutSeconds"] == pytest.approx(
        len(call.audio) / 8000, abs=0.01
    )


STORY = "Tell me a story."
INTERRUPTION = "Stop, tell me about Rome instead."


def script_story_then_rome(
    fake: FakeOpenAI, story: dict[str, Any], *more: dict[str, Any]
) -> tuple[str, str]:
    """Script a story (`story`: the reply's step), then an interruption answered "Rome is old.";
    the markers of the two user turns."""
    first, second = marker(), marker()
    fake.script(
        {"kind": "transcription", "transcript": f"Tell me a story {first}"},
        {"match": first, **story},
        *more,
        {"kind": "transcription", "transcript": f"Stop, tell me about Rome {second}"},
        {"match": second, "text": "Rome is old."},
    )
    return first, second


def story_cut_after_first_sentence(first: str, second: str) -> list[tuple[str, str, str]]:
    """The thread's (role, status, text) once the story was interrupted after its first
    sentence and the interruption answered."""
    return [
        ("user", "complete", f"Tell me a story {first}"),
        ("assistant", "interrupted", SENTENCES[0]),
        ("user", "complete", f"Stop, tell me about Rome {second}"),
        ("assistant", "complete", "Rome is old."),
    ]


async def story_call(server: ServerProcess, tmp_path: Path) -> tuple[str, str, bytes, bytes]:
    """A new call's SID and stream token, and the story question and interruption as μ-law."""
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    return call_sid, token, spoken_mulaw(tmp_path, STORY), spoken_mulaw(tmp_path, INTERRUPTION)


@requires_espeak
async def test_barge_in_clears_the_call_and_keeps_only_the_marked_words(
    fake: FakeOpenAI, server: ServerProcess, threads: Threads, tmp_path: Path
) -> None:
    first, second = script_story_then_rome(
        fake, {"text": " ".join(SENTENCES), "tokens_per_second": 8}
    )
    call_sid, token, question, interruption = await story_call(server, tmp_path)

    async with phone_call(server) as call:
        await call.start(token, call_sid)
        await call.say(silence(300) + question + silence(1000))
        # The first sentence has played; the second has been sent but not yet played.
        first_mark, second_mark = await call.wait_for_marks(2)
        await call.echo(first_mark)
        await call.say(interruption + silence(1000))
        clear = await call.wait_for_event("clear")
        # After a clear, Twilio echoes the marks it dropped: they must not count as played.
        await call.echo(second_mark)
        thread = await settled(threads, call_sid, 4)

    assert clear == {"event": "clear", "streamSid": call.stream_sid}
    assert [
        (m["role"], m["status"], m["text"]) for m in thread["messages"]
    ] == story_cut_after_first_sentence(first, second)
    assert thread["messages"][1]["error"]["code"] == "barge_in"
    (body,) = chat_bodies(fake, second)
    assert body["messages"][-2] == {"role": "assistant", "content": SENTENCES[0]}


@requires_espeak
async def test_a_sentence_is_marked_once_sent_though_the_next_is_slow_to_speak(
    fake: FakeOpenAI, server: ServerProcess, threads: Threads, tmp_path: Path
) -> None:
    first, second = script_story_then_rome(
        fake,
        {"text": " ".join(SENTENCES[:2])},
        {"kind": "speech", "match": SENTENCES[1], "hang_s": 8},
    )
    call_sid, token, question, interruption = await story_call(server, tmp_path)

    async with phone_call(server) as call:
        await call.start(token, call_sid)
        await call.say(silence(300) + question + silence(1000))
        (first_mark,) = await call.wait_for_marks(1)
        # The first sentence is marked with its last frame, while the second is still spoken.
        assert first_mark.audio_bytes == len(call.audio)
        await asyncio.sleep(0.5)
        assert (len(call.marks), len(call.audio)) == (1, first_mark.audio_bytes)
        await call.echo(first_mark)
        await call.say(interruption + silence(1000))
        await call.wait_for_event("clear")
        # The next reply is marked in its turn, whatever the interrupted one still reports.
        _, rome_mark = await call.wait_for_marks(2)
        await call.echo(rome_mark)
        thread = await settled(threads, call_sid, 4)

    assert [
        (m["role"], m["status"], m["text"]) for m in thread["messages"]
    ] == story_cut_after_first_sentence(first, second)
    reply_id = thread["messages"][1]["id"]
    assert first_mark.name == f"{reply_id}@{-(-first_mark.audio_bytes // 8)}"
    rome_bytes = rome_mark.audio_bytes - first_mark.audio_bytes
    assert rome_mark.name == f"{thread['messages'][3]['id']}@{-(-rome_bytes // 8)}"


# -- stream tokens ----------------------------------------------------------------------------


async def test_a_used_token_is_refused_and_creates_nothing(
    server: ServerProcess, threads: Threads
) -> None:
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    await short_call(server, call_sid, token)
    before = await thread_count(threads)

    async with phone_call(server) as again:
        await again.start(token, call_sid)
        assert await again.closing() == (4401, "invalid_token")

    assert await thread_count(threads) == before
    assert again.messages == []


async def test_an_expired_token_is_refused_and_creates_nothing(
    server: ServerProcess, threads: Threads
) -> None:
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    # A minute on: the token's expiry, moved into the past in the server's own database file.
    conn = apsw.Connection(str(server.db_path))
    conn.set_busy_timeout(5000)
    conn.execute(
        "UPDATE twilio_stream_tokens SET expires_at = expires_at - 61 WHERE call_sid = ?",
        (call_sid,),
    )
    assert conn.changes() == 1
    conn.close()
    before = await thread_count(threads)

    async with phone_call(server) as call:
        await call.start(token, call_sid)
        assert await call.closing() == (4401, "invalid_token")

    assert await thread_count(threads) == before


@pytest.mark.parametrize("which", ["unknown", "missing", "another-call"])
async def test_a_wrong_token_is_refused_and_creates_nothing(
    server: ServerProcess, threads: Threads, which: str
) -> None:
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    before = await thread_count(threads)

    async with phone_call(server) as call:
        if which == "unknown":
            await call.start(token + "x", call_sid)
        elif which == "missing":
            await call.send("connected", protocol="Call", version="1.0.0")
            start = {"streamSid": call.stream_sid, "callSid": call_sid, "customParameters": {}}
            await call.send("start", start=start, streamSid=call.stream_sid)
        else:
            await call.start(token, new_call_sid())
        assert await call.closing() == (4401, "invalid_token")

    assert await thread_count(threads) == before
    # A token offered by another call has leaked: it is spent, and its own call is refused too.
    if which == "another-call":
        async with phone_call(server) as call:
            await call.start(token, call_sid)
            assert await call.closing() == (4401, "invalid_token")
        assert await thread_count(threads) == before


async def test_a_stream_that_does_not_start_is_closed_with_1008(server: ServerProcess) -> None:
    async with phone_call(server) as call:
        await call.send("media", streamSid=call.stream_sid, media={"payload": "AAAA"})
        assert await call.closing() == (1008, "start_expected")


async def test_frames_piling_up_before_the_start_are_closed_with_1008(
    server: ServerProcess,
) -> None:
    for many, size in [(5, 10), (1, 70_000)]:  # Twilio sends one `connected`, then `start`
        async with phone_call(server) as call:
            for _ in range(many):
                await call.send("connected", protocol="Call", version="1.0.0", pad="x" * size)
            assert await call.closing() == (1008, "start_expected")


async def test_dtmf_and_marks_not_ours_are_ignored(server: ServerProcess) -> None:
    call_sid = new_call_sid()
    token = await stream_token(server, call_sid)
    async with phone_call(server) as call:
        await call.start(token, call_sid)
        await call.send("dtmf", streamSid=call.stream_sid, dtmf={"track": "inbound", "digit": "7"})
        for name in ["greeting", "msg@", "@120", "msg@12ms", ""]:
            await call.send("mark", streamSid=call.stream_sid, mark={"name": name})
        await call.send("mark", streamSid=call.stream_sid, mark={})
        await call.send("stop", streamSid=call.stream_sid, stop={"callSid": call_sid})
        assert await call.closing() == (1000, "call_ended")
    assert call.messages == []


# -- the routes' bounds -----------------------------------------------------------------------


async def test_only_the_exact_twilio_paths_go_without_a_bearer_token(
    server: ServerProcess,
) -> None:
    url = server.url.replace("http://", "ws://", 1) + "/twilio/stream/x"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url):
            pass
    assert refused.value.response.status_code == 403

    params = call_params(new_call_sid())
    async with httpx.AsyncClient(timeout=10) as anonymous:
        response = await anonymous.post(
            f"{server.url}/twilio/voice/",
            data=params,
            headers={"X-Twilio-Signature": twilio_signature(f"{PUBLIC_URL}/twilio/voice/", params)},
        )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.agent_server(
    "--public-url", PUBLIC_URL, "--twilio-auth-token", AUTH_TOKEN, "--max-calls", "2"
)
async def test_call_sockets_over_max_calls_are_closed_with_1013(server: ServerProcess) -> None:
    async with phone_call(server) as first, phone_call(server) as second:
        await first.send("connected", protocol="Call", version="1.0.0")
        await second.send("connected", protocol="Call", version="1.0.0")
        # Two sockets that have not started yet hold both places.
        async with phone_call(server) as third:
            assert await third.closing() == (1013, "too_many_calls")
        await first.socket.close()
        await first.closed.wait()
        # The place comes back once the server has seen the socket go.
        async with asyncio.timeout(10):
            while True:
                call_sid = new_call_sid()
                token = await stream_token(server, call_sid)
                async with phone_call(server) as fourth:
                    await fourth.start(token, call_sid)
                    await fourth.send("stop", streamSid=fourth.stream_sid, stop={})
                    closed = await fourth.closing()
                if closed == (1000, "call_ended"):
                    break
                assert closed == (1013, "too_many_calls")
                await asyncio.sleep(0.05)
        assert not second.closed.is_set()


@pytest.mark.agent_server(provider=False)
async def test_without_an_auth_token_the_stream_is_closed_at_once(server: ServerProcess) -> None:
    async with phone_call(server) as call:
        assert await call.closing(timeout=2) == (1008, "twilio_not_configured")
    assert call.messages == []


def test_an_http_public_url_with_an_auth_token_stops_the_server(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "voicestack",
            "serve",
            "--db",
            str(tmp_path / "voicestack.db"),
            "--public-url",
            "http://voice.example.com",
            "--twilio-auth-token",
            AUTH_TOKEN,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert (
        "--twilio-auth-token needs an https:// --public-url: Twilio streams calls over wss://"
        " only." in result.stderr
    )
