"""Speech-to-speech conversations on an edge (DESIGN §12): the edge holds the provider's socket
and the audio, and the primary keeps the thread: the turns, the reply with its usage and
metrics, and the function calls, which run on the primary (approvals included).

The edge holds no provider secret: it connects with a short-lived key the primary minted with
its own key (the fake provider's `POST /v1/realtime/client_secrets`).

Real processes: nats-server, a primary relaying its agents (`--voice-mode realtime`) with the
fake provider, two edges; real speech from espeak-ng.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Origin

from tests.support.agent import Threads, marker
from tests.support.realtime import Conversation, conversation, spoken_pcm
from tests.support.relay import (
    RELAY_FLAGS,
    SLOW_COUNT_SCRIPT,
    SPOKEN_TURN_START,
    client_events,
    cut_during_a_count,
    first_tool_call,
    provider_session,
    say_turn,
    settled_thread,
)
from tests.support.scale import (
    Cluster,
    client,
    new_thread,
    running_cluster,
    sign_in,
    voice_sessions,
)
from tests.support.voice import requires_espeak
from voicestack.auth.sessions import csrf_value
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio]

ANSWER = "It is sunny in Paris. Enjoy your day."
USAGE = {"input_tokens": 120, "output_tokens": 45}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, provider: FakeOpenAI) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("relay")
    with running_cluster(workdir, provider.api_base, primary_args=RELAY_FLAGS) as started:
        yield started


@pytest.fixture
async def threads(cluster: Cluster) -> AsyncIterator[Threads]:
    """The primary's thread routes, as its admin."""
    async with client(cluster.primary.url, cluster.token) as http:
        yield Threads(http)


async def _thread(cluster: Cluster) -> str:
    async with client(cluster.edges[0].url, cluster.token) as http:
        return await new_thread(http, "relayed on an edge")


def _authorization(session: dict[str, Any]) -> str:
    return str(session["headers"]["authorization"])


@requires_espeak
async def test_a_spoken_turn_runs_on_the_edge_and_is_kept_by_the_primary(
    cluster: Cluster, provider: FakeOpenAI, threads: Threads, tmp_path: Path
) -> None:
    provider.realtime.script(
        {
            "turns": ["What is the weather like today"],
            "responses": [{"text": ANSWER, "audio_ms": 1200, "usage": USAGE}],
        }
    )
    edge = cluster.edges[0]
    thread_id = await _thread(cluster)
    speech = spoken_pcm(tmp_path, "What is the weather like today?")
    async with conversation(edge, thread_id, cluster.token) as talk:
        ready = await talk.start()
        assert await voice_sessions(edge) == 1  # the session, and the provider's socket, here
        started = await say_turn(talk, speech)
        stopped = await talk.next_event("reply_stopped")

    assert ready == {"type": "ready", "sampleRate": 16000}
    assert talk.kinds()[:5] == SPOKEN_TURN_START
    assert stopped == {
        "type": "reply_stopped",
        "messageId": started["messageId"],
        "status": "complete",
    }
    spoken = "".join(e["text"] for e in talk.events if e["type"] == "reply_audio")
    assert spoken == ANSWER
    appended = client_events(provider, "input_audio_buffer.append")
    assert sum(event["audio"]["bytes"] for event in appended) > 0  # the edge sent the audio
    session = provider_session(provider)
    assert _authorization(session).startswith("Bearer ek_")  # never the primary's own key
    assert "sk-test" not in _authorization(session)

    thread = await settled_thread(threads, thread_id, 2)
    question, reply = thread["messages"]
    assert (question["role"], question["text"], question["status"]) == (
        "user",
        "What is the weather like today",
        "complete",
    )
    assert question["id"] == talk.events[3]["messageId"]
    assert (reply["id"], reply["text"], reply["status"]) == (
        started["messageId"],
        ANSWER,
        "complete",
    )
    assert reply["replyTo"] == question["id"]
    assert question["usage"]["audioInSeconds"] > 0.5
    assert reply["usage"]["promptTokens"] == USAGE["input_tokens"]
    assert reply["usage"]["completionTokens"] == USAGE["output_tokens"]
    async with asyncio.timeout(10):  # its metrics follow once its audio has played
        while (await threads.get(thread_id))["messages"][1]["voice"] is None:
            await asyncio.sleep(0.05)
    voice = (await threads.get(thread_id))["messages"][1]["voice"]
    assert voice["interrupted"] is False
    assert voice["audioOutSeconds"] == pytest.approx(1.2, abs=0.05)


async def test_a_function_call_needing_approval_runs_on_the_primary(
    cluster: Cluster, provider: FakeOpenAI, threads: Threads
) -> None:
    provider.realtime.script(
        {
            "responses": [
                {"function_calls": [{"name": "guarded_echo", "arguments": {"text": "hi"}}]},
                {"text": "Echoed."},
            ]
        }
    )
    edge = cluster.edges[1]
    thread_id = await _thread(cluster)
    async with conversation(edge, thread_id, cluster.token) as talk:
        await talk.start()
        await talk.send_json({"type": "text", "text": "Echo hi."})
        call = await first_tool_call(threads, thread_id, "awaiting_approval")
        approved = await threads.mutation("tool_calls.approve", {"id": call["id"]})
        stopped = await talk.next_event("reply_stopped")

    assert approved == {"id": call["id"], "status": "pending"}
    assert stopped["status"] == "complete"
    thread = await settled_thread(threads, thread_id, 2)
    said, reply = thread["messages"]
    assert (said["role"], said["text"]) == ("user", "Echo hi.")
    assert (reply["text"], reply["status"]) == ("Echoed.", "complete")
    assert thread["toolCalls"][0]["status"] == "done"
    assert thread["toolCalls"][0]["result"] == {"echo": "hi"}
    outputs = provider_session(provider)["function_call_outputs"]
    assert [output["output"] for output in outputs] == ['{"echo":"hi"}']


async def test_a_client_who_may_not_see_the_thread_is_refused_as_on_one_server(
    cluster: Cluster, provider: FakeOpenAI
) -> None:
    thread_id = await _thread(cluster)
    before = len(provider.realtime.sessions())
    async with conversation(cluster.edges[0], f"{thread_id}x", cluster.token) as talk:
        closing = await talk.closing()
    assert closing[0] == 4404
    assert len(provider.realtime.sessions()) == before  # no provider socket was opened


async def test_without_short_lived_keys_the_conversation_is_relayed_to_the_primary(
    cluster: Cluster, provider: FakeOpenAI, threads: Threads
) -> None:
    provider.realtime.script({"responses": [{"text": "Hello there."}]})
    edge = cluster.edges[0]
    thread_id = await _thread(cluster)
    provider.realtime.mints_secrets = False
    try:
        async with conversation(edge, thread_id, cluster.token) as talk:
            await talk.start()
            assert await voice_sessions(edge) == 0  # relayed, frame by frame, to the primary
            await talk.send_json({"type": "text", "text": "Hi."})
            stopped = await talk.next_event("reply_stopped")
    finally:
        provider.realtime.mints_secrets = True
    assert stopped["status"] == "complete"
    assert _authorization(provider_session(provider)) == "Bearer sk-test"
    thread = await settled_thread(threads, thread_id, 2)
    assert [m["text"] for m in thread["messages"]] == ["Hi.", "Hello there."]


async def test_an_edges_conversation_outlives_its_primary_being_away(
    tmp_path: Path, provider: FakeOpenAI
) -> None:
    provider.realtime.script({"responses": [{"text": "Before."}]})  # then the fake echoes
    with running_cluster(tmp_path, provider.api_base, primary_args=RELAY_FLAGS) as cluster:
        edge = cluster.edges[0]
        thread_id = await _thread(cluster)
        async with conversation(edge, thread_id, cluster.token) as talk:
            await talk.start()
            await talk.send_json({"type": "text", "text": "Hi."})
            assert (await talk.next_event("reply_stopped"))["status"] == "complete"
            assert cluster.primary.stop() == 0
            mark = len(talk.events)
            await talk.send_json({"type": "text", "text": "while away"})
            error = await talk.next_event("error", after=mark)
            assert error["code"] == "primary_unavailable"
            cluster.primary.start()
            # The socket and the provider's stayed open: once the primary is back, the next
            # turn is kept and answered.
            async with asyncio.timeout(30):
                while True:
                    mark = len(talk.events)
                    await talk.send_json({"type": "text", "text": "Back."})
                    answer = await talk.wait_for(
                        lambda e: e["type"] in ("reply_stopped", "error"), after=mark
                    )
                    if answer["type"] == "reply_stopped":
                        break
                    assert answer["code"] == "primary_unavailable", answer
                    await asyncio.sleep(0.5)
            assert answer["status"] == "complete"
        async with client(cluster.primary.url, cluster.token) as http:
            thread = await settled_thread(Threads(http), thread_id, 4)
    texts = [m["text"] for m in thread["messages"]]
    assert texts == ["Hi.", "Before.", "Back.", "You said: Back."]


async def test_a_barge_in_during_a_function_call_stops_it_on_the_primary(
    cluster: Cluster, provider: FakeOpenAI, threads: Threads
) -> None:
    provider.realtime.script(SLOW_COUNT_SCRIPT)
    thread_id = await _thread(cluster)
    async with conversation(cluster.edges[0], thread_id, cluster.token) as talk:
        await talk.start()
        counted = await cut_during_a_count(talk, threads, thread_id)
    cut, answer, counting_id = counted.cut, counted.answer, counted.counting_id

    assert cut == {"type": "reply_stopped", "messageId": counting_id, "status": "interrupted"}
    assert answer["status"] == "complete"
    thread = await settled_thread(threads, thread_id, 4)
    (call,) = thread["toolCalls"]
    assert (call["status"], call["result"]) == ("failed", None)  # stopped, not done
    assert provider_session(provider)["function_call_outputs"] == []
    assert thread["messages"][3]["text"] == "Stopped."


async def test_a_signed_in_page_talks_speech_to_speech_on_an_edge(
    cluster: Cluster, provider: FakeOpenAI, threads: Threads
) -> None:
    provider.realtime.script({"responses": [{"text": "Heard on the page."}]})
    edge = cluster.edges[1]
    name = f"relay-{marker()}"
    token = cluster.primary.create_token(name)
    secret = sign_in(cluster, name)
    cookie = {"Cookie": f"vs_session={secret}; vs_csrf={csrf_value(secret)}"}
    async with client(edge.url, token) as http:
        thread_id = await new_thread(http, "a page's conversation")
    url = f"{edge.url.replace('http', 'ws', 1)}/api/threads/{thread_id}/audio"
    async with connect(url, additional_headers=cookie, origin=Origin(edge.url)) as socket:
        talk = Conversation(socket)
        reader = asyncio.create_task(talk.read())
        await talk.start()
        assert await voice_sessions(edge) == 1
        await talk.send_json({"type": "text", "text": "Hello from the page."})
        stopped = await talk.next_event("reply_stopped")
        reader.cancel()
    assert stopped["status"] == "complete"
    thread = await settled_thread(threads, thread_id, 2)
    said, reply = thread["messages"]
    assert (said["text"], said["authorName"]) == ("Hello from the page.", name)
    assert reply["text"] == "Heard on the page."
