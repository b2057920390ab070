"""Phone calls on an edge (DESIGN §12): a pipeline call's conversation runs on the edge that
holds Twilio's socket, and its thread, turns and reply are kept by the primary, exactly as on
one server; a call whose agent talks through a speech-to-speech model is relayed whole to the
primary, which holds the provider's connection.

Real processes: nats-server, a primary with the fake provider, two edges; Twilio played over
the real webhook and Media Streams socket, with real speech from espeak-ng and sox.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest

from tests.support.agent import Threads, marker
from tests.support.relay import RELAY_FLAGS
from tests.support.relay import client_events as relay_client_events
from tests.support.scale import Cluster, client, running_cluster, voice_sessions
from tests.support.twilio import (
    AUTH_TOKEN,
    PUBLIC_URL,
    WEATHER_ANSWER,
    new_call_sid,
    phone_call,
    script_weather,
    settled,
    short_call,
    silence,
    spoken_mulaw,
    stream_token,
    thread_count,
    weather_call,
)
from tests.support.voice import requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio]

TWILIO_FLAGS = ("--public-url", PUBLIC_URL, "--twilio-auth-token", AUTH_TOKEN)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, provider: FakeOpenAI) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("calls")
    with running_cluster(workdir, provider.api_base, primary_args=TWILIO_FLAGS) as started:
        yield started


@pytest.fixture
async def threads(cluster: Cluster) -> AsyncIterator[Threads]:
    """The primary's thread routes, as its admin."""
    async with client(cluster.primary.url, cluster.token) as http:
        yield Threads(http)


def _call_sessions(cluster: Cluster) -> list[tuple[float, bool]]:
    """Each call session's lifetime in seconds, and whether it has ended."""
    conn = apsw.Connection(str(cluster.primary.db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute(
            "SELECT expires_at - created_at, revoked_at IS NOT NULL FROM auth_sessions"
            " WHERE provider = 'twilio-call' ORDER BY created_at"
        ).fetchall()
    finally:
        conn.close()
    return [(float(lifetime), bool(ended)) for lifetime, ended in rows]


@requires_espeak
async def test_a_call_runs_on_the_edge_and_its_thread_is_kept_by_the_primary(
    cluster: Cluster, provider: FakeOpenAI, threads: Threads, tmp_path: Path
) -> None:
    transcript = script_weather(provider)
    edge, other_edge = cluster.edges
    call_sid = new_call_sid()
    token = await stream_token(other_edge, call_sid)  # the webhook lands on another edge
    sessions_before = len(_call_sessions(cluster))

    async def runs_here() -> None:
        assert await voice_sessions(edge) == 1  # here, not relayed to the primary

    answered = await weather_call(edge, threads, call_sid, token, tmp_path, runs_here)

    call, thread, marks, closed = answered.call, answered.thread, answered.marks, answered.closed
    assert closed == (1000, "call_ended")
    reply = thread["messages"][1]
    assert [m.name for m in marks] == [
        f"{reply['id']}@{-(-m.audio_bytes // 8)}" for m in call.marks[:2]
    ]
    assert marks[-1].audio_bytes == len(call.audio)
    assert [(m["role"], m["status"], m["text"]) for m in thread["messages"]] == [
        ("user", "complete", transcript),
        ("assistant", "complete", WEATHER_ANSWER),
    ]
    assert thread["metadata"]["callSid"] == call_sid
    assert thread["messages"][0]["authorName"] == "twilio"
    assert thread["messages"][0]["audioFileId"]  # the turn's recording, kept by the primary
    assert reply["voice"]["audioOutSeconds"] == pytest.approx(len(call.audio) / 8000, abs=0.01)
    # The call's session was the call's alone: it did not slide, and it ended with the call.
    async with asyncio.timeout(10):
        while not (sessions := _call_sessions(cluster)[sessions_before:]) or not sessions[0][1]:
            await asyncio.sleep(0.05)
    ((lifetime, _),) = sessions
    assert 24 * 3600 <= lifetime <= 25 * 3600
    assert await voice_sessions(edge) == 0


@requires_espeak
async def test_a_hang_up_while_the_turn_is_saved_stops_its_reply(
    cluster: Cluster, provider: FakeOpenAI, threads: Threads, tmp_path: Path
) -> None:
    mark = marker()
    provider.script(  # the caller hangs up while the primary still transcribes the turn
        {"kind": "transcription", "transcript": f"Goodbye {mark}", "hang_s": 1.5},
        {"match": mark, "text": "Goodbye to you too.", "first_token_delay_s": 3},
    )
    edge = cluster.edges[0]
    call_sid = new_call_sid()
    token = await stream_token(edge, call_sid)
    async with phone_call(edge) as call:
        await call.start(token, call_sid)
        await call.say(silence(300) + spoken_mulaw(tmp_path, "Goodbye.") + silence(1000))
        await asyncio.sleep(0.5)  # the turn is with the primary now
        await call.send("stop", streamSid=call.stream_sid, stop={"callSid": call_sid})
        assert await call.closing() == (1000, "call_ended")
    thread = await settled(threads, call_sid, 2)
    question, reply = thread["messages"]
    assert question["text"] == f"Goodbye {mark}"
    # Saved after the hang-up, as on one server the reply it started is stopped at once, not
    # written and spoken for nobody.
    assert (reply["status"], reply["text"]) == ("interrupted", "")
    assert reply["voice"]["interrupted"] is True
    async with asyncio.timeout(10):  # and the call's session ends after that
        while not all(ended for _, ended in _call_sessions(cluster)):
            await asyncio.sleep(0.05)


async def test_a_spent_or_wrong_token_is_refused_on_the_edge_and_creates_nothing(
    cluster: Cluster, threads: Threads
) -> None:
    edge = cluster.edges[0]
    call_sid = new_call_sid()
    token = await stream_token(edge, call_sid)
    await short_call(edge, call_sid, token)
    before = await thread_count(threads)
    fresh_sid = new_call_sid()
    fresh = await stream_token(edge, fresh_sid)  # spent by a start that names no call
    cases = [(token, call_sid), ("not-the-token", new_call_sid()), (fresh, "")]
    for presented, sid in cases:
        async with phone_call(edge) as call:
            await call.start(presented, sid)
            assert await call.closing() == (4401, "invalid_token")
    assert await thread_count(threads) == before


async def test_the_primarys_call_start_answers_no_client_even_through_an_edge(
    cluster: Cluster,
) -> None:
    body = {"token": "anything", "callSid": new_call_sid()}
    headers = {"voicestack-edge-call": "1"}
    async with httpx.AsyncClient(timeout=10) as anonymous:
        for server in (cluster.primary, cluster.edges[0]):
            url = f"{server.url}/twilio/stream/start"
            response = await anonymous.post(url, json=body, headers=headers)
            assert response.status_code == 404, (server.url, response.text)
            assert response.json()["error"]["code"] == "not_found"


@requires_espeak
async def _speech_to_speech_call(
    cluster: Cluster, provider: FakeOpenAI, tmp_path: Path, where: int
) -> tuple[dict[str, Any], bytes]:
    """A call to a relayed agent through edge one: the thread it leaves, and what was said;
    `where` is how many conversations edge one holds during the call."""
    answer, answer_ms = "It is sunny.", 1200
    provider.realtime.script(
        {"turns": ["What is the weather"], "responses": [{"text": answer, "audio_ms": answer_ms}]}
    )
    edge = cluster.edges[0]
    call_sid = new_call_sid()
    token = await stream_token(edge, call_sid)
    said = silence(300) + spoken_mulaw(tmp_path, "What is the weather?") + silence(1000)
    async with client(cluster.primary.url, cluster.token) as http, phone_call(edge) as call:
        await call.start(token, call_sid)
        await call.say(said)
        async with asyncio.timeout(20):
            while len(call.audio) < answer_ms * 8:
                await asyncio.sleep(0.05)
        assert await voice_sessions(edge) == where
        thread = await settled(Threads(http), call_sid, 2)
        await call.send("stop", streamSid=call.stream_sid, stop={"callSid": call_sid})
        assert await call.closing() == (1000, "call_ended")
    texts = [(m["role"], m["text"], m["status"]) for m in thread["messages"]]
    assert texts == [("user", "What is the weather", "complete"), ("assistant", answer, "complete")]
    return thread, said


@pytest.fixture(scope="module")
def relayed(tmp_path_factory: pytest.TempPathFactory, provider: FakeOpenAI) -> Iterator[Cluster]:
    """A cluster whose primary relays its agents to the speech-to-speech provider."""
    workdir = tmp_path_factory.mktemp("relayed-calls")
    with running_cluster(workdir, provider.api_base, primary_args=RELAY_FLAGS) as started:
        yield started


async def test_a_speech_to_speech_call_runs_on_the_edge_with_a_short_lived_key(
    relayed: Cluster, provider: FakeOpenAI, tmp_path: Path
) -> None:
    minted = provider.realtime.minted()
    _, said = await _speech_to_speech_call(relayed, provider, tmp_path, where=1)
    appended = relay_client_events(provider, "input_audio_buffer.append")
    assert sum(event["audio"]["bytes"] for event in appended) == len(said)
    authorization = provider.realtime.session()["headers"]["authorization"]
    assert authorization.startswith("Bearer ek_")  # the edge never holds the real key
    assert provider.realtime.minted() == minted + 1
    async with asyncio.timeout(10):  # the call's session ends with it
        while not _call_sessions(relayed)[-1][1]:
            await asyncio.sleep(0.05)


async def test_a_speech_to_speech_call_is_relayed_to_the_primary_without_short_lived_keys(
    relayed: Cluster, provider: FakeOpenAI, tmp_path: Path
) -> None:
    provider.realtime.mints_secrets = False
    try:
        _, said = await _speech_to_speech_call(relayed, provider, tmp_path, where=0)
    finally:
        provider.realtime.mints_secrets = True
    appended = relay_client_events(provider, "input_audio_buffer.append")
    assert sum(event["audio"]["bytes"] for event in appended) == len(said)
    authorization = provider.realtime.session()["headers"]["authorization"]
    assert authorization == "Bearer sk-test"  # the primary holds the provider's socket


async def test_a_call_that_starts_while_no_primary_answers_is_closed_with_1013(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    workdir = tmp_path_factory.mktemp("no-primary")
    with running_cluster(workdir, primary_args=TWILIO_FLAGS) as cluster:
        edge = cluster.edges[0]
        call_sid = new_call_sid()
        token = await stream_token(edge, call_sid)
        cluster.primary.stop()
        async with phone_call(edge) as call:
            await call.start(token, call_sid)
            assert await call.closing() == (1013, "primary_unavailable")
            assert call.messages == []  # Twilio is sent nothing it does not know
