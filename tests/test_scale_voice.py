"""Live conversations on an edge (DESIGN §12): the session runs on the edge, near its client
(turn detection, resampling, paced audio), and its turns, replies and metrics are kept by the
primary, exactly as when it runs on one server.

Real processes: nats-server, a primary with the fake provider, two edges; real speech from
espeak-ng, over a real WebSocket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Origin

from tests.support.agent import marker
from tests.support.realtime import (
    Conversation,
    conversation,
    interrupt_at,
    script_barge_in,
    silence,
    spoken_pcm,
    stop_mid_reply,
)
from tests.support.scale import (
    Cluster,
    another_edge,
    client,
    new_thread,
    running_cluster,
    sign_in,
    voice_sessions,
)
from tests.support.server import ServerProcess
from tests.support.voice import requires_espeak
from voicestack.auth.sessions import csrf_value
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, requires_espeak]

SENTENCES = ["It is sunny in Paris.", "Enjoy your day."]
LONG_ANSWER = (
    "The first sentence is here. The second sentence follows it now."
    " A third one comes after that. The fourth sentence ends the reply."
)
SECONDS_PER_CHAR = 0.06  # the fake provider's speech length
PARTS = ("endOfSpeechToTranscriptMs", "transcriptToFirstTokenMs", "firstTokenToFirstAudioMs")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, provider: FakeOpenAI) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("voice"), provider.api_base) as started:
        yield started


async def _thread(server: ServerProcess, token: str) -> str:
    async with client(server.url, token) as http:
        return await new_thread(http, "talk")


async def _on_primary(cluster: Cluster, thread_id: str) -> dict[str, Any]:
    async with client(cluster.primary.url, cluster.token) as http:
        response = await http.get(f"/api/threads/{thread_id}")
        assert response.status_code == 200, response.text
        thread: dict[str, Any] = response.json()
        return thread


async def test_a_spoken_turn_runs_on_the_edge_and_is_kept_by_the_primary(
    cluster: Cluster, provider: FakeOpenAI, tmp_path: Path
) -> None:
    edge = cluster.edges[0]
    mark = marker()
    provider.script(
        {"kind": "transcription", "transcript": f"What is the weather like today {mark}?"},
        {"match": mark, "text": " ".join(SENTENCES)},
    )
    thread_id = await _thread(edge, cluster.token)
    speech = spoken_pcm(tmp_path, "What is the weather like today?")
    async with conversation(edge, thread_id) as talk:
        await talk.start()
        assert await voice_sessions(edge) == 1  # here, not relayed to the primary
        await talk.say(silence(300) + speech + silence(1000))
        transcript = await talk.next_event("transcript")
        stopped = await talk.next_event("reply_stopped")
        spoken = [e for e in talk.events if e["type"] == "reply_audio"]
    assert transcript["text"] == f"What is the weather like today {mark}?"
    assert stopped["status"] == "complete"
    assert [e["text"] for e in spoken] == SENTENCES
    for sentence in spoken:  # each sentence's audio, resampled on the edge, came whole
        frames = talk.audio_after(sentence)
        assert sum(len(f) for f in frames) == pytest.approx(
            len(sentence["text"]) * SECONDS_PER_CHAR * 32000, abs=64
        )
    thread = await _on_primary(cluster, thread_id)
    question, reply = thread["messages"]
    assert question["text"] == transcript["text"]
    assert question["audioFileId"]  # the turn's recording, kept by the primary
    assert (reply["id"], reply["status"]) == (stopped["messageId"], "complete")
    voice = reply["voice"]
    for key in (*PARTS, "voiceToVoiceMs"):
        assert isinstance(voice[key], int), (key, voice)
        assert voice[key] >= 0, (key, voice)
    assert abs(sum(voice[key] for key in PARTS) - voice["voiceToVoiceMs"]) <= 3, voice
    assert voice["interrupted"] is False
    assert voice["audioInSeconds"] == question["usage"]["audioInSeconds"] > 0
    spoken_s = sum(len(sentence) * SECONDS_PER_CHAR for sentence in SENTENCES)
    assert voice["audioOutSeconds"] == pytest.approx(spoken_s, abs=0.02)
    assert await voice_sessions(edge) == 0


async def test_barge_in_on_an_edge_keeps_what_was_heard(
    cluster: Cluster, provider: FakeOpenAI, tmp_path: Path
) -> None:
    edge = cluster.edges[1]
    barge = script_barge_in(provider, tmp_path, LONG_ANSWER)
    thread_id = await _thread(edge, cluster.token)
    async with conversation(edge, thread_id) as talk:
        reply_id = await interrupt_at(talk, barge, 2)
    thread = await _on_primary(cluster, thread_id)
    cut, answer = thread["messages"][1], thread["messages"][3]
    assert (cut["id"], cut["status"], answer["status"]) == (reply_id, "interrupted", "complete")
    assert LONG_ANSWER.startswith(cut["text"])
    assert 0 < len(cut["text"]) < len(LONG_ANSWER)
    assert cut["voice"]["interrupted"] is True


async def test_a_typed_turn_and_a_refusal_on_an_edge(
    cluster: Cluster, provider: FakeOpenAI
) -> None:
    edge = cluster.edges[0]
    mark = marker()
    provider.script({"match": mark, "text": "Typed, and heard."})
    thread_id = await _thread(edge, cluster.token)
    async with conversation(edge, thread_id) as talk:
        await talk.start()
        await talk.send_json({"type": "text", "text": f"Hi {mark}"})
        stopped = await talk.next_event("reply_stopped")
    assert stopped["status"] == "complete"
    thread = await _on_primary(cluster, thread_id)
    assert [m["text"] for m in thread["messages"]] == [f"Hi {mark}", "Typed, and heard."]
    async with conversation(edge, "thr_nosuchthread") as refused:
        assert await refused.closing() == (4404, "thread_not_found")


async def test_an_edge_shutting_down_ends_its_conversations_after_the_sentence(
    tmp_path: Path,
) -> None:
    sentences = [f"Sentence number {n} of the answer is here." for n in range(1, 9)]
    with FakeOpenAI() as fake, running_cluster(tmp_path, fake.api_base) as cluster:
        mark = marker()
        fake.script({"match": mark, "text": " ".join(sentences), "tokens_per_second": 20})
        edge = cluster.edges[0]
        thread_id = await _thread(edge, cluster.token)
        async with conversation(edge, thread_id) as talk:
            stopped = await stop_mid_reply(edge, talk, f"Talk {mark}")
        reply_id, closed = stopped.reply_id, stopped.closed
        assert stopped.exit_code == 0
        spoken = [e for e in talk.events if e["type"] == "reply_audio"]
        assert closed == (1001, "server_shutting_down")
        assert talk.events[-1] == {
            "type": "reply_stopped",
            "messageId": reply_id,
            "status": "interrupted",
        }
        thread = await _on_primary(cluster, thread_id)
        reply = thread["messages"][1]
        assert (reply["id"], reply["status"]) == (reply_id, "interrupted")
        assert reply["text"] == " ".join(e["text"] for e in spoken)
        assert 1 <= len(spoken) < len(sentences)


async def test_the_primarys_conversation_routes_answer_no_client_even_through_an_edge(
    cluster: Cluster, provider: FakeOpenAI
) -> None:
    mark = marker()
    provider.script({"match": mark, "text": "A reply nobody may cut."})
    edge = cluster.edges[0]
    async with client(edge.url, cluster.token) as http:
        thread_id = await new_thread(http, "internal routes")
        sent = await http.post(f"/api/threads/{thread_id}/messages", json={"text": mark})
        assert sent.status_code == 201, sent.text
        reply_id = sent.json()["replyId"]
        base = f"/api/threads/{thread_id}/audio"
        end = {"how": "cut", "heard": "", "why": "barge_in", "clock": {"end_of_speech": 0}}
        for spoofed in ({}, {"voicestack-edge-call": "1"}):
            typed = await http.post(f"{base}/typed", json={"text": "hi"}, headers=spoofed)
            cut = await http.post(f"{base}/replies/{reply_id}", json=end, headers=spoofed)
            mode = await http.get(f"{base}/mode", headers=spoofed)
            assert (typed.status_code, cut.status_code, mode.status_code) == (404, 404, 404)
    thread = await _on_primary(cluster, thread_id)
    assert [m["text"] for m in thread["messages"]] == [mark, "A reply nobody may cut."]


async def test_an_edges_conversation_counts_against_the_tokens_stream_limit(
    cluster: Cluster, tmp_path: Path
) -> None:
    with another_edge(cluster, tmp_path, "--max-streams-per-token", "1") as edge:
        thread_id = await _thread(edge, cluster.token)
        async with conversation(edge, thread_id) as first:
            await first.start()
            async with conversation(edge, thread_id) as second:
                error = await second.next_event("error")
                closed = await second.closing()
        assert error["code"] == "too_many_streams"
        assert closed == (4429, "too_many_streams")
        async with conversation(edge, thread_id) as again:  # its place is free again
            await again.start()


async def test_a_signed_in_page_talks_on_an_edge_from_its_own_origin_only(
    cluster: Cluster, provider: FakeOpenAI
) -> None:
    edge = cluster.edges[1]
    name = f"voice-{marker()}"
    token = cluster.primary.create_token(name)
    secret = sign_in(cluster, name)
    cookie = {"Cookie": f"vs_session={secret}; vs_csrf={csrf_value(secret)}"}
    thread_id = await _thread(edge, token)
    mark = marker()
    provider.script({"match": mark, "text": "Heard on the page."})
    url = f"{edge.url.replace('http', 'ws', 1)}/api/threads/{thread_id}/audio"
    async with connect(url, additional_headers=cookie, origin=Origin(edge.url)) as socket:
        talk = Conversation(socket)
        reader = asyncio.create_task(talk.read())
        await talk.start()
        await talk.send_json({"type": "text", "text": f"Hi {mark}"})
        stopped = await talk.next_event("reply_stopped")
        reader.cancel()
    assert stopped["status"] == "complete"
    forged = Origin("http://evil.example")
    async with connect(url, additional_headers=cookie, origin=forged) as socket:
        talk = Conversation(socket)
        reader = asyncio.create_task(talk.read())
        closed = await talk.closing()
        reader.cancel()
    assert talk.events[0]["code"] == "csrf_failed"
    assert closed == (4401, "csrf_failed")


async def test_an_edges_conversation_outlives_its_primary_being_away(tmp_path: Path) -> None:
    with FakeOpenAI() as fake, running_cluster(tmp_path, fake.api_base) as cluster:
        edge = cluster.edges[0]
        thread_id = await _thread(edge, cluster.token)
        before, after = marker(), marker()
        fake.script({"match": before, "text": "Before."}, {"match": after, "text": "After."})
        async with conversation(edge, thread_id) as talk:
            await talk.start()
            await talk.send_json({"type": "text", "text": f"Hi {before}"})
            assert (await talk.next_event("reply_stopped"))["status"] == "complete"
            assert cluster.primary.stop() == 0
            mark = len(talk.events)
            await talk.send_json({"type": "text", "text": "while away"})
            error = await talk.next_event("error", after=mark)
            assert error["code"] == "primary_unavailable"
            cluster.primary.start()
            # The socket stayed open: once the primary is back, the next turn is answered.
            with anyio.fail_after(30):
                while True:
                    mark = len(talk.events)
                    await talk.send_json({"type": "text", "text": f"Back {after}"})
                    answer = await talk.wait_for(
                        lambda e: e["type"] in ("reply_stopped", "error"), after=mark
                    )
                    if answer["type"] == "reply_stopped":
                        break
                    assert answer["code"] == "primary_unavailable", answer
                    await anyio.sleep(0.5)
            assert answer["status"] == "complete"
        thread = await _on_primary(cluster, thread_id)
        texts = [m["text"] for m in thread["messages"]]
        assert texts == [f"Hi {before}", "Before.", f"Back {after}", "After."]
