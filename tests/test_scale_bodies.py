"""Bodies larger than one NATS message through an edge (DESIGN §12): an edge takes what a single
server takes. The body stays on the edge while its call lasts and the primary reads it in
parts; a response too large comes back in parts.

Real processes: nats-server with a max_payload of 128 KiB (so that bodies of a few seconds of
speech are already too large for one message), a primary with the fake provider, two edges;
real speech from espeak-ng over a real WebSocket.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent import marker
from tests.support.realtime import conversation, silence, spoken_pcm
from tests.support.scale import Cluster, client, new_thread, running_cluster
from tests.support.voice import requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio]

MAX_PAYLOAD = 128 * 1024


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, provider: FakeOpenAI) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("bodies")
    with running_cluster(workdir, provider.api_base, nats_max_payload=MAX_PAYLOAD) as started:
        yield started


async def test_a_call_larger_than_a_nats_message_is_forwarded_and_answered_whole(
    cluster: Cluster,
) -> None:
    note = "".join(f"line {n} of a long note. " for n in range(8_000))
    assert 1.5 * MAX_PAYLOAD < len(note) < 256 * 1024  # over one message, under the args limit
    edge, other_edge = cluster.edges
    async with client(edge.url, cluster.token) as http:
        added = await http.post("/api/mutation/audit.add", json={"args": {"note": note}})
        assert added.status_code == 200, added.text
    async with client(other_edge.url, cluster.token) as http:
        listed = await http.post("/api/query/audit.list", json={"args": {}})
        assert listed.status_code == 200, listed.text
    assert listed.json()["value"][-1]["note"] == note


@requires_espeak
async def test_a_spoken_turn_larger_than_a_nats_message_is_kept_whole(
    cluster: Cluster, provider: FakeOpenAI, tmp_path: Path
) -> None:
    mark = marker()
    provider.script(
        {"kind": "transcription", "transcript": f"A long question {mark}"},
        {"match": mark, "text": "A short answer."},
    )
    edge = cluster.edges[0]
    speech = spoken_pcm(
        tmp_path,
        "This is a rather long question about the weather, the mountains, the sea, and what"
        " the afternoon will bring to the city by the river.",
    )
    async with client(edge.url, cluster.token) as http:
        thread_id = await new_thread(http, "long turn")
        async with conversation(edge, thread_id) as talk:
            await talk.start()
            await talk.say(silence(300) + speech + silence(1000))
            transcript = await talk.next_event("transcript")
            stopped = await talk.next_event("reply_stopped")
        assert transcript["text"] == f"A long question {mark}"
        assert stopped["status"] == "complete"
        thread = (await http.get(f"/api/threads/{thread_id}")).json()
        question = thread["messages"][0]
        recording = await http.get(f"/api/files/{question['audioFileId']}")
        assert recording.status_code == 200
    assert len(recording.content) > MAX_PAYLOAD  # in parts both ways
    with wave.open(io.BytesIO(recording.content)) as wav:
        seconds = wav.getnframes() / wav.getframerate()
    assert seconds == pytest.approx(question["usage"]["audioInSeconds"], abs=0.01)
