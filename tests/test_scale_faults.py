"""Scale-out faults with real processes: the primary away, a NATS restart, a primary failover
while a reply streams, and an edge killed behind haproxy. Streams stay open through each, writes
are answered 503 with Retry-After meanwhile, and no client misses an event or gets one twice.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support.realtime import conversation, typed_turn
from tests.support.scale import Haproxy, running_cluster
from tests.support.server import REPO, ServerProcess, server_env
from tests.support.sse import Event, Watch, watch
from tests.support.web_server import words
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio


@pytest.fixture
def provider() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def client(url: str, token: str | None) -> httpx.AsyncClient:
    # Streams stay quiet while a primary restarts (keep-alives come every 15 s): wait longer.
    assert token is not None
    return httpx.AsyncClient(
        base_url=url, timeout=30.0, headers={"Authorization": f"Bearer {token}"}
    )


async def send_when_up(http: httpx.AsyncClient, thread_id: str, text: str) -> None:
    """Post a message, retrying while the answer is 503 (a primary is on its way back)."""
    with anyio.fail_after(20):
        while True:
            response = await http.post(f"/api/threads/{thread_id}/messages", json={"text": text})
            if response.status_code != 503:
                assert response.status_code == 201, response.text
                return
            await anyio.sleep(0.2)


async def until(feed: Watch, wanted: str, seen: list[Event], timeout: float = 15) -> None:
    """Read events into `seen` until one's data holds `wanted`."""
    with anyio.fail_after(timeout):
        while not any(wanted in event.data for event in seen):
            seen.append(await feed.next(timeout=timeout))


async def direct_events(primary: ServerProcess, thread_id: str, after: int) -> list[Event]:
    """The thread's events after `after`, straight from a primary, once they stop coming."""
    async with client(primary.url, primary.token) as http:
        params = {"since": str(after)}
        async with watch(http, f"/api/threads/{thread_id}/events", params=params) as feed:
            events: list[Event] = []
            while True:
                try:
                    events.append(await feed.next(timeout=1.5))
                except AssertionError:
                    return events


def revoke_token(primary: ServerProcess, token: str) -> None:
    """Revoke `token` with `voicestack token revoke`, on the primary's file."""
    command = [sys.executable, "-m", "voicestack", "token", "revoke", token]
    command += ["--db", str(primary.db_path)]
    subprocess.run(command, cwd=REPO, env=server_env(), capture_output=True, check=True)


def numbered(events: list[Event]) -> list[tuple[int, str, str]]:
    return [(int(e.id), e.event, e.data) for e in events]


async def test_the_primary_away_gives_503_and_streams_resume_when_it_is_back(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path) as cluster:
        token = cluster.primary.token
        first, second = cluster.edges
        async with client(first.url, token) as writer, client(second.url, token) as reader:
            thread_id = (await writer.post("/api/threads", json={"title": "away"})).json()["id"]
            async with watch(reader, f"/api/threads/{thread_id}/events") as feed:
                start = int((await feed.next()).id)
                assert cluster.primary.stop() == 0
                refused = await writer.post(
                    f"/api/threads/{thread_id}/messages", json={"text": "while away"}
                )
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "2"
                assert refused.json()["error"]["code"] == "primary_unavailable"
                listed = await reader.get("/api/threads")
                assert listed.status_code == 503
                cluster.primary.start()
                await send_when_up(writer, thread_id, "back again")
                seen: list[Event] = []
                await until(feed, "back again", seen)
        expected = await direct_events(cluster.primary, thread_id, start)
        assert numbered(seen) == numbered(expected[: len(seen)])


async def test_a_client_revoked_while_the_primary_was_away_is_ended_when_it_is_back(
    tmp_path: Path,
) -> None:
    # The edge joins each client of a thread's stream again on the primary that reopens it:
    # one whose token was revoked meanwhile is ended there, and the others go on.
    with running_cluster(tmp_path) as cluster:
        member_token = cluster.primary.create_token("away-member")
        edge = cluster.edges[0]
        async with (
            client(edge.url, cluster.primary.token) as owner,
            client(edge.url, member_token) as member,
        ):
            thread_id = (await owner.post("/api/threads", json={"title": "away"})).json()["id"]
            invite = {"args": {"id": thread_id, "user": "away-member"}}
            assert (await owner.post("/api/mutation/threads.invite", json=invite)).is_success
            path = f"/api/threads/{thread_id}/events"
            async with watch(owner, path) as staying, watch(member, path) as revoked:
                await staying.next()
                await revoked.next()
                assert cluster.primary.stop() == 0
                revoke_token(cluster.primary, member_token)
                cluster.primary.start()
                await send_when_up(owner, thread_id, "back again")
                await until(staying, "back again", [])
                events = await revoked.until_end(timeout=15)
        assert all("back again" not in event.data for event in events)


async def test_a_nats_restart_loses_no_event(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        token = cluster.primary.token
        edge = cluster.edges[0]
        async with client(edge.url, token) as http, client(cluster.primary.url, token) as direct:
            thread_id = (await http.post("/api/threads", json={"title": "nats"})).json()["id"]
            async with watch(http, f"/api/threads/{thread_id}/events") as feed:
                start = int((await feed.next()).id)
                cluster.nats.stop()
                for n in range(3):  # committed on the primary while NATS is down
                    sent = await direct.post(
                        f"/api/threads/{thread_id}/messages", json={"text": f"during {n}"}
                    )
                    assert sent.status_code == 201
                cluster.nats.start()
                await send_when_up(http, thread_id, "after the restart")
                seen: list[Event] = []
                await until(feed, "after the restart", seen, timeout=20)
        expected = await direct_events(cluster.primary, thread_id, start)
        assert numbered(seen) == numbered(expected[: len(seen)])
        during = [e.json["text"] for e in seen if e.event == "message" and "during" in e.data]
        assert during == ["during 0", "during 1", "during 2"]


async def test_a_primary_failover_while_a_reply_streams(
    tmp_path: Path, provider: FakeOpenAI
) -> None:
    answer = words(80)
    provider.script({"match": "long one", "text": answer, "tokens_per_second": 25})
    with running_cluster(tmp_path, provider.api_base) as cluster:
        standby = cluster.second_primary()
        standby.start()
        try:
            token = cluster.primary.token
            edge = cluster.edges[0]
            async with client(edge.url, token) as http:
                thread_id = (await http.post("/api/threads", json={"title": "fo"})).json()["id"]
                async with watch(http, f"/api/threads/{thread_id}/events") as feed:
                    start = int((await feed.next()).id)
                    await send_when_up(http, thread_id, "long one")
                    seen: list[Event] = []
                    await until(feed, "w10", seen)  # the reply is streaming
                    cluster.primary.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                    await until(feed, '"status":"interrupted"', seen, timeout=20)
                    await send_when_up(http, thread_id, "who answers now")
                    await until(feed, "who answers now", seen, timeout=20)
                    assert cluster.primary.process is not None
                    assert cluster.primary.process.wait(15) == 0
                    cluster.primary.process = None
            expected = await direct_events(standby, thread_id, start)
            assert numbered(seen) == numbered(expected[: len(seen)])
        finally:
            if standby.running:
                assert standby.stop() == 0, standby.log()
            print(f"--- standby primary\n{standby.log()}")


async def test_haproxy_in_front_of_two_edges_survives_a_killed_edge(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        doomed, survivor = cluster.edges
        proxy = Haproxy(tmp_path, [doomed, survivor], balance="first")  # every stream on `doomed`
        proxy.start()
        try:
            token = cluster.primary.token
            async with client(proxy.url, token) as http:
                thread_id = (await http.post("/api/threads", json={"title": "lb"})).json()["id"]
                seen: list[Event] = []
                async with watch(http, f"/api/threads/{thread_id}/events") as feed:
                    start = int((await feed.next()).id)
                    await send_when_up(http, thread_id, "through haproxy")
                    await until(feed, "through haproxy", seen)
                    doomed.kill()
                    seen += await feed.cut(timeout=10)  # its edge died under it
                last = max(int(e.id) for e in seen if e.id)
                for n in range(2):
                    await send_when_up(http, thread_id, f"while reconnecting {n}")
                headers = {"Last-Event-ID": str(last)}
                async with watch(
                    http, f"/api/threads/{thread_id}/events", headers=headers
                ) as again:
                    await until(again, "while reconnecting 1", seen)
            expected = await direct_events(cluster.primary, thread_id, start)
            assert numbered(seen) == numbered(expected[: len(seen)])
        finally:
            proxy.stop()


async def test_a_live_conversation_through_an_edge(tmp_path: Path, provider: FakeOpenAI) -> None:
    with running_cluster(tmp_path, provider.api_base) as cluster:
        edge = cluster.edges[1]
        async with client(edge.url, cluster.primary.token) as http:
            thread_id = (await http.post("/api/threads", json={"title": "talk"})).json()["id"]
        turn = await typed_turn(edge, provider, thread_id, "Spoken through the edge.")
        assert turn.stopped["status"] == "complete"
        spoken = await turn.talk.next_event("reply_audio")
        assert spoken["text"] == "Spoken through the edge."
        assert b"".join(turn.talk.audio_after(spoken))  # the sentence's audio came through
        async with conversation(edge, "thr_nosuchthread") as refused:
            assert await refused.closing() == (4404, "thread_not_found")
