"""Scale-out (DESIGN §12): one primary and two edges joined by a real nats-server.

Writes through either edge reach watchers on the other; each edge answers with the primary's
own responses; a revoked token or a removed member is cut off on every edge at the commit; a
client whose edge dies resumes on the other with Last-Event-ID, missing nothing and getting
nothing twice; and an edge writes nothing to disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import nats
import pytest
from nats.aio.msg import Msg

from tests.support.scale import (
    Cluster,
    EdgeProcess,
    age_session,
    another_edge,
    client,
    edge_workdir,
    events_after,
    new_thread,
    resume_counted,
    revoke,
    running_cluster,
    sign_in,
)
from tests.support.sse import watch
from voicestack.scale.nats_sync import settled

pytestmark = pytest.mark.anyio

SESSION_DAYS = 14  # the servers' default --session-days
DAY_S = 86_400


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("scale")) as started:
        yield started


async def test_writes_through_one_edge_reach_watchers_on_the_other(cluster: Cluster) -> None:
    token = cluster.primary.token
    assert token is not None
    first, second = cluster.edges
    async with client(first.url, token) as a, client(second.url, token) as b:
        thread_id = await new_thread(a, "across edges")
        async with (
            watch(b, "/api/threads/" + thread_id + "/events") as feed,
            watch(b, "/api/watch/threads.get", params={"args": f'{{"id":"{thread_id}"}}'}) as got,
        ):
            snapshot = await feed.next()
            assert (snapshot.event, snapshot.json) == ("ready", {"cursor": int(snapshot.id)})
            assert (await got.next()).json["value"]["messages"] == []
            posted = await a.post(
                f"/api/threads/{thread_id}/messages", json={"text": "hello from edge one"}
            )
            assert posted.status_code == 201, posted.text
            message = await feed.next()
            assert message.event == "message"
            assert message.json["text"] == "hello from edge one"
            assert int(message.id) > int(snapshot.id)
            while True:  # the reply's own rows follow; the user message shows up in the query
                value = (await got.next()).json["value"]
                if any(m["text"] == "hello from edge one" for m in value["messages"]):
                    break


async def test_an_edge_answers_with_the_primarys_own_responses(cluster: Cluster) -> None:
    edge = cluster.edges[0]
    async with httpx.AsyncClient(base_url=edge.url, timeout=10.0) as anonymous:
        refused = await anonymous.get("/api/threads")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        no_stream = await anonymous.get("/api/watch/threads.list")
        assert no_stream.status_code == 401
        assert no_stream.json()["error"]["code"] == "unauthorized"
    assert cluster.primary.token is not None
    async with client(edge.url, cluster.primary.token) as http:
        missing = await http.get("/api/threads/thr_nosuchthread/events")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "thread_not_found"
        unknown = await http.get("/api/watch/no.such.query")
        assert unknown.status_code == 404
        health = (await http.get("/healthz")).json()
        assert health["role"] == "edge"
        assert health["nats"] is True


async def test_a_revoked_token_is_cut_off_on_every_edge(cluster: Cluster) -> None:
    token = cluster.primary.create_token("revoked-on-edges")
    first, second = cluster.edges
    async with client(first.url, token) as a, client(second.url, token) as b:
        thread_id = await new_thread(a, "to be revoked")
        async with (
            watch(a, f"/api/threads/{thread_id}/events") as on_first,
            watch(b, "/api/watch/threads.list") as on_second,
        ):
            await on_first.next()
            await on_second.next()
            revoke(cluster, token)
            await on_first.until_end(timeout=10)
            await on_second.until_end(timeout=10)
        for http in (a, b):
            after = await http.get("/api/threads")
            assert after.status_code == 401


async def test_a_removed_member_loses_the_thread_on_every_edge(cluster: Cluster) -> None:
    owner_token = cluster.primary.create_token("edge-owner")
    member_token = cluster.primary.create_token("edge-member")
    first, second = cluster.edges
    async with client(first.url, owner_token) as owner, client(second.url, member_token) as member:
        thread_id = await new_thread(owner, "shared across edges")
        invite = {"id": thread_id, "user": "edge-member"}
        invited = await owner.post("/api/mutation/threads.invite", json={"args": invite})
        assert invited.status_code == 200, invited.text
        async with watch(member, f"/api/threads/{thread_id}/events") as feed:
            await feed.next()
            left = await owner.post("/api/mutation/threads.leave", json={"args": invite})
            assert left.status_code == 200, left.text
            await owner.post(f"/api/threads/{thread_id}/messages", json={"text": "secret"})
            events = await feed.until_end(timeout=10)
            assert all("secret" not in event.data for event in events)


async def test_a_client_resumes_on_the_other_edge_with_no_gap_or_duplicate(
    cluster: Cluster,
) -> None:
    token = cluster.primary.token
    assert token is not None
    first, second = cluster.edges
    async with client(first.url, token) as a, client(second.url, token) as b:
        thread_id = await new_thread(a, "resume elsewhere")
        async with watch(a, f"/api/threads/{thread_id}/events") as feed:
            last = (await feed.next()).id
            for n in range(3):
                await b.post(f"/api/threads/{thread_id}/messages", json={"text": f"before {n}"})
            seen = []
            while len([e for e in seen if e.event == "message" and "before" in e.data]) < 3:
                event = await feed.next()
                seen.append(event)
                last = event.id or last
        # The client is gone from edge one; meanwhile more is written through edge two.
        for n in range(3):
            await b.post(f"/api/threads/{thread_id}/messages", json={"text": f"after {n}"})
        expected = await events_after(cluster, token, thread_id, int(last))
        assert any("after 2" in data for _, data in expected)
        async with watch(
            b, f"/api/threads/{thread_id}/events", headers={"Last-Event-ID": last}
        ) as resumed:
            got = [await resumed.next() for _ in expected]
            await resumed.quiet(0.5)
        assert [(int(e.id), e.data) for e in got] == expected


async def test_a_client_resumes_from_an_edges_own_recent_events(cluster: Cluster) -> None:
    # Another client of the same token keeps edge two's upstream of the thread open: a client
    # resuming there is caught up from that upstream's recent events, not by the primary.
    token = cluster.primary.token
    assert token is not None
    first, second = cluster.edges
    async with client(first.url, token) as a, client(second.url, token) as b:
        thread_id = await new_thread(a, "resume from the edge")
        path = f"/api/threads/{thread_id}/events"
        async with watch(b, path) as keeper:
            await keeper.next()
            async with watch(a, path) as feed:
                last = (await feed.next()).id
                await a.post(f"/api/threads/{thread_id}/messages", json={"text": "seen 0"})
                while True:
                    event = await feed.next()
                    last = event.id or last
                    if event.event == "message" and "seen 0" in event.data:
                        break
            for n in range(2):
                await a.post(f"/api/threads/{thread_id}/messages", json={"text": f"missed {n}"})
            expected = await events_after(cluster, token, thread_id, int(last))
            got, resumes = await resume_counted(b, path, last, len(expected))
    assert any("missed 1" in data for _, data in expected)
    assert got == expected
    assert resumes == 1


async def test_a_cursor_past_every_event_is_resumed_by_the_primary(cluster: Cluster) -> None:
    # A Last-Event-ID beyond any event (a database restored from an older backup): the edge
    # does not resume it from its own events, which would hold back everything up to it.
    token = cluster.primary.token
    assert token is not None
    _, second = cluster.edges
    async with client(second.url, token) as b:
        thread_id = await new_thread(b, "cursor from the future")
        path = f"/api/threads/{thread_id}/events"
        async with watch(b, path) as keeper:
            await keeper.next()
            before = (await b.get("/healthz")).json()["feedResumesHere"]
            async with watch(b, path, headers={"Last-Event-ID": str(10**15)}) as ahead:
                await b.post(f"/api/threads/{thread_id}/messages", json={"text": "still heard"})
                while "still heard" not in (event := await ahead.next()).data:
                    pass
            resumes = (await b.get("/healthz")).json()["feedResumesHere"] - before
    assert event.event == "message"
    assert resumes == 0


async def test_a_signed_in_client_resuming_on_an_edge_has_its_cookie_judged_by_the_primary(
    cluster: Cluster,
) -> None:
    # A sign-in cookie expires, and is renewed by use, on the primary. A client resuming with
    # one beside the thread's open stream is caught up from the edge's own recent events, but
    # joins only once the primary has judged its cookie, and gets the cookie renewed.
    token = cluster.primary.create_token("edge-cookie")
    secret = sign_in(cluster, "edge-cookie", lifetime_s=SESSION_DAYS * DAY_S)
    cookie = {"Cookie": f"vs_session={secret}"}
    _, second = cluster.edges
    async with (
        client(second.url, token) as owner,
        httpx.AsyncClient(base_url=second.url, timeout=10.0, headers=cookie) as b,
    ):
        thread_id = await new_thread(owner, "signed in on an edge")
        path = f"/api/threads/{thread_id}/events"
        async with watch(owner, path) as keeper:
            await keeper.next()
            async with watch(b, path) as first:
                last = (await first.next()).id
            await owner.post(f"/api/threads/{thread_id}/messages", json={"text": "missed"})
            expected = await events_after(cluster, token, thread_id, int(last))
            age_session(cluster, secret, DAY_S * 2)  # due for renewal at its next use
            await anyio.sleep(0.5)  # the primary reads the other process's commit
            before = (await b.get("/healthz")).json()["feedResumesHere"]
            async with watch(b, path, headers={"Last-Event-ID": last}) as resumed:
                got = [await resumed.next() for _ in expected]
                renewed = resumed.response.headers.get("set-cookie", "")
            resumes = (await b.get("/healthz")).json()["feedResumesHere"] - before
            age_session(cluster, secret, SESSION_DAYS * DAY_S)  # expired now
            await anyio.sleep(0.5)
            expired = await b.get(path, headers={"Last-Event-ID": last})
    assert any("missed" in data for _, data in expected)
    assert [(int(e.id), e.data) for e in got] == expected
    assert resumes == 1
    assert renewed.startswith(f"vs_session={secret};")
    assert expired.status_code == 401


async def test_a_signed_in_client_joining_a_shared_watch_gets_its_own_renewed_cookie(
    cluster: Cluster,
) -> None:
    # The primary slides a session's expiry when it is used, and sends the cookie again: a
    # client joining an edge's open watch of the same cookie gets that answer, its own.
    cluster.primary.create_token("edge-watcher")
    secret = sign_in(cluster, "edge-watcher", lifetime_s=SESSION_DAYS * DAY_S)  # fresh
    cookie = {"Cookie": f"vs_session={secret}"}
    _, second = cluster.edges
    async with (
        httpx.AsyncClient(base_url=second.url, timeout=10.0, headers=cookie) as b,
        watch(b, "/api/watch/threads.list") as keeper,
    ):
        await keeper.next()
        assert "set-cookie" not in keeper.response.headers
        age_session(cluster, secret, DAY_S * 2)  # now due for renewal at its next use
        await anyio.sleep(0.5)  # the primary reads the other process's commit
        async with watch(b, "/api/watch/threads.list") as joiner:
            await joiner.next()
            renewed = joiner.response.headers.get("set-cookie", "")
    assert renewed.startswith(f"vs_session={secret};")


async def test_a_signed_in_client_opening_a_watch_is_judged_by_its_opening_alone(
    cluster: Cluster,
) -> None:
    # The primary judges, and renews, the cookie of the opening itself: no call before it.
    cluster.primary.create_token("edge-opener")
    secret = sign_in(cluster, "edge-opener", lifetime_s=SESSION_DAYS * DAY_S)
    age_session(cluster, secret, DAY_S * 2)  # due for renewal at its next use
    await anyio.sleep(0.5)  # the primary reads the other process's commit
    calls = Calls()
    nc = await nats.connect(cluster.nats.url)
    try:
        await nc.subscribe("voicestack.call", cb=calls.on_message)
        await settled(nc)
        cookie = {"Cookie": f"vs_session={secret}"}
        first, _ = cluster.edges
        async with (
            httpx.AsyncClient(base_url=first.url, timeout=10.0, headers=cookie) as a,
            watch(a, "/api/watch/threads.list") as opener,
        ):
            await opener.next()
            renewed = opener.response.headers.get("set-cookie", "")
        await settled(nc)
    finally:
        await nc.close()
    assert renewed.startswith(f"vs_session={secret};")
    assert calls.count == 0


class Calls:
    """Calls edges make on any primary, counted."""

    def __init__(self) -> None:
        self.count = 0

    async def on_message(self, msg: Msg) -> None:
        self.count += 1


async def test_an_edge_holds_each_token_to_its_stream_limit(
    cluster: Cluster, tmp_path: Path
) -> None:
    with another_edge(cluster, tmp_path, "--max-streams-per-token", "1") as edge:
        token = cluster.primary.create_token("one-stream")
        async with client(edge.url, token) as http:
            thread_id = await new_thread(http, "one stream at a time")
            async with watch(http, "/api/watch/threads.list") as first:
                await first.next()
                refused = await http.get("/api/watch/threads.list")
                assert refused.status_code == 429
                assert refused.headers["retry-after"] == "5"
                assert refused.json()["error"]["code"] == "too_many_streams"
                # The same token spelled otherwise is still the same token.
                path = f"/api/threads/{thread_id}/events"
                respelled = await http.get(path, headers={"Authorization": f"BEARER  {token}"})
                assert respelled.status_code == 429
                async with httpx.AsyncClient(base_url=edge.url, timeout=10.0) as anonymous:
                    # Padded, it is no token at all, as on a single server.
                    padded = await anonymous.get(path, params={"token": f"{token}\xa0"})
                assert padded.status_code == 401
            with anyio.fail_after(5):  # its place is given back when it ends
                while True:
                    async with http.stream("GET", "/api/watch/threads.list") as again:
                        if again.status_code == 200:
                            break
                    await anyio.sleep(0.05)


async def test_an_edge_writes_nothing_to_disk(cluster: Cluster) -> None:
    for edge in cluster.edges:
        assert sorted(p.name for p in edge.state_dir.iterdir()) == ["edge-logs"]
        logs = sorted(p.name for p in (edge.state_dir / "edge-logs").iterdir())
        assert logs == ["server.log", "voicestack.toml"]
        assert not edge.db_path.exists()


async def test_values_larger_than_a_nats_message_pass_through_edges(cluster: Cluster) -> None:
    # nats-server's max_payload is 1 MiB here: values and responses over it go in parts.
    token = cluster.primary.token
    assert token is not None
    first, second = cluster.edges
    note = "n" * 240_000  # five make 1.2 MB
    async with client(first.url, token) as a, client(second.url, token) as b:
        async with watch(b, "/api/watch/audit.list") as notes:
            before = len((await notes.next()).json["value"])
            for _ in range(5):
                added = await a.post("/api/mutation/audit.add", json={"args": {"note": note}})
                assert added.status_code == 200, added.text
            while len(value := (await notes.next(timeout=10)).json["value"]) < before + 5:
                pass
            assert [row["note"] for row in value[-5:]] == [note] * 5
            async with watch(b, "/api/watch/audit.list") as late:  # from the edge's copy
                assert (await late.next()).json["value"] == value
        listed = await a.post("/api/query/audit.list", json={"args": {}})
        assert listed.status_code == 200
        assert listed.json() == {"value": value, "version": listed.json()["version"]}


async def test_each_client_of_a_shared_stream_gets_its_own_cors_answer(
    cluster: Cluster, tmp_path: Path
) -> None:
    origins = ["https://a.example", "https://b.example"]
    args = [flag for origin in origins for flag in ("--cors-origin", origin)]
    edge = EdgeProcess(edge_workdir(tmp_path, "cors"), cluster.primary, cluster.nats.url, *args)
    edge.start()
    try:
        assert cluster.primary.token is not None
        async with client(edge.url, cluster.primary.token) as http:
            for origin in origins:  # the second shares the first one's upstream
                async with watch(
                    http, "/api/watch/items.count", headers={"Origin": origin}
                ) as counted:
                    await counted.next()
                    assert counted.response.headers["access-control-allow-origin"] == origin
                    assert counted.response.headers["x-content-type-options"] == "nosniff"
    finally:
        assert edge.stop() == 0, edge.log()


async def test_internal_headers_from_clients_are_ignored(cluster: Cluster) -> None:
    token = cluster.primary.token
    assert token is not None
    async with client(cluster.edges[0].url, token) as http:
        thread_id = await new_thread(http, "no smuggling")
        headers = {"voicestack-catch-up": "1"}
        async with watch(http, f"/api/threads/{thread_id}/events", headers=headers) as feed:
            assert (await feed.next()).event == "ready"
            assert "voicestack-cursor" not in feed.response.headers
            await http.post(f"/api/threads/{thread_id}/messages", json={"text": "still live"})
            assert (await feed.next()).json["text"] == "still live"
        head = await http.head(f"/api/threads/{thread_id}/events")
        assert head.status_code == 200
        assert head.headers["content-type"] == "text/event-stream; charset=utf-8"
