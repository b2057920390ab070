"""Scale-out (DESIGN §12): a thread's stream is published once, for every edge that follows it.

Two edges whose clients watch one thread take the same stream from the primary: each event
crosses NATS once on its way to them. A client revoked on one edge leaves at the commit while
the other edge goes on; an edge that lets go leaves the stream to the other; and after a NATS
restart both edges take the thread up again, caught up, with no gap and no duplicate.
"""

from __future__ import annotations

import contextlib
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import nats
import pytest
from nats.aio.msg import Msg

from tests.support.scale import Cluster, client, new_thread, revoke, running_cluster
from tests.support.sse import Event, Watch, watch
from voicestack.scale.nats_sync import settled
from voicestack.scale.primary import LEASE_S

pytestmark = pytest.mark.anyio


@dataclass
class Spy:
    """Every message NATS carries on the streams' subjects, by subject."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)

    async def on_message(self, msg: Msg) -> None:
        self.messages.append((msg.subject, msg.data))

    def carrying(self, text: str, prefix: str) -> int:
        """Messages on subjects under `prefix` whose payload holds `text`."""
        wanted = text.encode()
        return sum(
            1 for subject, data in self.messages if subject.startswith(prefix) and wanted in data
        )


@contextlib.asynccontextmanager
async def spying(cluster: Cluster) -> AsyncIterator[Spy]:
    """A NATS client of its own that sees every stream message, and every opening on a
    primary of the edge's choosing, from now on."""
    spy = Spy()
    nc = await nats.connect(cluster.nats.url)
    try:
        await nc.subscribe("voicestack.thread.>", cb=spy.on_message)
        await nc.subscribe("voicestack.stream.>", cb=spy.on_message)
        await nc.subscribe("voicestack.open.*", cb=spy.on_message)  # on a thread's home
        await settled(nc)
        yield spy
    finally:
        await nc.close()


@dataclass
class TwoEdges:
    """An owner watching a thread through edge one and a member through edge two."""

    owner: httpx.AsyncClient
    member: httpx.AsyncClient
    thread_id: str
    mine: Watch
    theirs: Watch
    member_token: str

    async def post(self, text: str) -> None:
        """The owner posts `text` (through edge one)."""
        sent = await self.owner.post(f"/api/threads/{self.thread_id}/messages", json={"text": text})
        assert sent.status_code == 201, sent.text


@contextlib.asynccontextmanager
async def watching_on_both(
    cluster: Cluster, member: str, quiet_s: float = 10.0
) -> AsyncIterator[TwoEdges]:
    """The two feeds open, each with its first event read; `quiet_s` is how long a stream may
    stay silent (keep-alives come every 15 s)."""
    owner_token = cluster.primary.create_token(f"{member}-owner")
    member_token = cluster.primary.create_token(member)
    first, second = cluster.edges
    async with (
        httpx.AsyncClient(
            base_url=first.url, timeout=quiet_s, headers={"Authorization": f"Bearer {owner_token}"}
        ) as owner,
        httpx.AsyncClient(
            base_url=second.url,
            timeout=quiet_s,
            headers={"Authorization": f"Bearer {member_token}"},
        ) as other,
    ):
        thread_id = await new_thread(owner, f"two edges, {member}")
        invite = {"args": {"id": thread_id, "user": member}}
        assert (await owner.post("/api/mutation/threads.invite", json=invite)).is_success
        path = f"/api/threads/{thread_id}/events"
        async with watch(owner, path) as mine, watch(other, path) as theirs:
            await mine.next()
            await theirs.next()
            yield TwoEdges(owner, other, thread_id, mine, theirs, member_token)


async def until_text(feed: Watch, text: str, seen: list[Event] | None = None) -> None:
    """Read `feed` (into `seen`, given) until an event holding `text`."""
    with anyio.fail_after(15):
        while True:
            event = await feed.next(timeout=15)
            if seen is not None:
                seen.append(event)
            if text in event.data:
                return


async def test_a_thread_watched_through_two_edges_crosses_nats_once(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        async with watching_on_both(cluster, "once") as both, spying(cluster) as spy:
            await both.post("published once")
            await until_text(both.mine, "published once")
            await until_text(both.theirs, "published once")
            await anyio.sleep(0.5)  # anything sent twice would have come by now
            health = [(await c.get("/healthz")).json() for c in (both.owner, both.member)]
        assert spy.carrying("published once", "voicestack.thread.") == 1
        assert spy.carrying("published once", "voicestack.stream.") == 0
        assert [h["threadStreams"] for h in health] == [1, 1]
        subjects = {s for s, data in spy.messages if b"published once" in data}
        assert subjects == {
            f"voicestack.thread.{both.thread_id}.{s.rsplit('.', 1)[1]}" for s in subjects
        }


async def _hearing(http: httpx.AsyncClient, primaries: int) -> None:
    """Until the edge of `http` hears `primaries` primary processes serving."""
    with anyio.fail_after(10):
        while (await http.get("/healthz")).json()["primaries"] != primaries:
            await anyio.sleep(0.1)


async def _posted_once_to_each(
    one: httpx.AsyncClient, two: httpx.AsyncClient, threads: list[str], spy: Spy
) -> None:
    """Post to each thread, watched through both edges: each message crosses NATS once, on
    one stream of its thread."""
    for thread_id in threads:
        path = f"/api/threads/{thread_id}/events"
        async with watch(one, path) as mine, watch(two, path) as theirs:
            await mine.next()
            await theirs.next()
            text = f"shared {thread_id}"
            sent = await one.post(f"/api/threads/{thread_id}/messages", json={"text": text})
            assert sent.status_code == 201, sent.text
            await until_text(mine, text)
            await until_text(theirs, text)
    await anyio.sleep(0.5)  # anything sent twice would have come by now
    for thread_id in threads:
        assert spy.carrying(f"shared {thread_id}", "voicestack.thread.") == 1


def _homes(spy: Spy) -> Counter[str]:
    """The openings edges made on primaries of their choosing, by primary."""
    return Counter(s.rsplit(".", 1)[1] for s, _ in spy.messages if s.startswith("voicestack.open."))


async def test_with_two_primaries_serving_both_edges_share_one_stream_of_each_thread(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path) as cluster:
        second = cluster.second_primary()
        second.start()
        try:
            first_edge, second_edge = cluster.edges
            async with (
                client(first_edge.url, cluster.token) as one,
                client(second_edge.url, cluster.token) as two,
                spying(cluster) as spy,
            ):
                await _hearing(one, 2)
                await _hearing(two, 2)
                threads = [await new_thread(one, f"two primaries {n}") for n in range(12)]
                await _posted_once_to_each(one, two, threads, spy)
            assert len(_homes(spy)) == 2  # the threads' homes are on both primaries
        finally:
            second.stop()


async def test_threads_move_to_their_home_when_a_primary_comes(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        first_edge, second_edge = cluster.edges
        async with (
            client(first_edge.url, cluster.token) as one,
            client(second_edge.url, cluster.token) as two,
        ):
            threads = [await new_thread(one, f"moved home {n}") for n in range(12)]
            feeds = contextlib.AsyncExitStack()
            async with feeds:
                # Edge one follows every thread on the only primary there is.
                for thread_id in threads:
                    feed = await feeds.enter_async_context(
                        watch(one, f"/api/threads/{thread_id}/events")
                    )
                    await feed.next()
                second = cluster.second_primary()
                async with spying(cluster) as moves:
                    second.start()
                    try:
                        await _hearing(one, 2)
                        await _hearing(two, 2)
                        with anyio.fail_after(10):  # edge one moves the threads homed there
                            while True:
                                seen = sum(_homes(moves).values())
                                await anyio.sleep(1.0)
                                if seen and sum(_homes(moves).values()) == seen:
                                    break
                        moved = _homes(moves)
                        async with spying(cluster) as spy:
                            await _posted_once_to_each(one, two, threads, spy)
                    finally:
                        second.stop()
                assert len(moved) == 1  # all to the primary that came


async def test_a_client_revoked_on_one_edge_leaves_while_the_other_edge_goes_on(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path) as cluster:
        async with watching_on_both(cluster, "revoked") as both:
            revoke(cluster, both.member_token)
            events = await both.theirs.until_end(timeout=10)
            await both.post("after the revocation")
            await until_text(both.mine, "after the revocation")
        assert all("after the revocation" not in event.data for event in events)


async def test_an_edge_that_lets_go_leaves_the_stream_to_the_other(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        token = cluster.token
        first, second = cluster.edges
        async with client(first.url, token) as one, client(second.url, token) as two:
            thread_id = await new_thread(one, "lets go")
            path = f"/api/threads/{thread_id}/events"
            async with watch(two, path) as staying:
                await staying.next()
                async with watch(one, path) as leaving:
                    await leaving.next()
                    await one.post(f"/api/threads/{thread_id}/messages", json={"text": "both"})
                    await until_text(leaving, "both")
                    await until_text(staying, "both")
                with anyio.fail_after(5):  # edge one's only client left: it lets go
                    while (await one.get("/healthz")).json()["threadStreams"]:
                        await anyio.sleep(0.05)
                sent = await one.post(f"/api/threads/{thread_id}/messages", json={"text": "alone"})
                assert sent.status_code == 201, sent.text
                await until_text(staying, "alone")


async def test_after_a_nats_restart_both_edges_catch_up_with_no_gap_or_duplicate(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path) as cluster:
        async with (
            watching_on_both(cluster, "restart") as both,
            client(cluster.primary.url, cluster.token) as direct,
        ):
            cluster.nats.stop()
            for n in range(3):  # committed while NATS is down: each edge must catch up
                sent = await direct.post(
                    f"/api/threads/{both.thread_id}/messages", json={"text": f"during {n}"}
                )
                assert sent.status_code == 201, sent.text
            cluster.nats.start()
            with anyio.fail_after(20):
                while True:
                    answer = await both.owner.post(
                        f"/api/threads/{both.thread_id}/messages", json={"text": "back"}
                    )
                    if answer.status_code == 201:
                        break
                    await anyio.sleep(0.2)
            mine: list[Event] = []
            theirs: list[Event] = []
            await until_text(both.mine, '"text":"back"', mine)
            await until_text(both.theirs, '"text":"back"', theirs)
            for edge in (both.owner, both.member):  # each edge reopened its stream
                assert (await edge.get("/healthz")).json()["streamReopens"] >= 1
    for seen in (mine, theirs):
        ids = [int(event.id) for event in seen]
        assert ids == sorted(set(ids))
        during = [e.json["text"] for e in seen if e.event == "message" and "during" in e.data]
        assert during == ["during 0", "during 1", "during 2"]
    assert [e.id for e in mine] == [e.id for e in theirs]


async def test_a_client_resuming_on_the_edge_that_attached_gets_exactly_what_it_missed(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path) as cluster:
        token = cluster.token
        first, second = cluster.edges
        async with (
            client(first.url, token) as one,
            client(second.url, token) as two,
            client(cluster.primary.url, token) as direct,
        ):
            thread_id = await new_thread(one, "resume on the attached edge")
            path = f"/api/threads/{thread_id}/events"
            for text in ("missed 1", "missed 2"):
                sent = await one.post(f"/api/threads/{thread_id}/messages", json={"text": text})
                assert sent.status_code == 201, sent.text
            async with watch(direct, path, params={"since": "0"}) as everything:
                expected: list[Event] = []
                await until_text(everything, "missed 2", expected)
                with contextlib.suppress(AssertionError):
                    while True:
                        expected.append(await everything.next(timeout=1.0))
            async with watch(one, path) as holding:
                await holding.next()  # edge one holds the thread's stream now
                resume = {"Last-Event-ID": expected[0].id}
                async with watch(two, path, headers=resume) as resumed:
                    seen = [await resumed.next() for _ in expected[1:]]
    assert [(e.id, e.data) for e in seen] == [(e.id, e.data) for e in expected[1:]]


async def shared_feeds(primary: httpx.AsyncClient) -> dict[str, int]:
    details = (await primary.get("/healthz", params={"details": "1"})).json()["details"]
    counts: dict[str, int] = details["sharedFeeds"]
    return counts


async def test_the_primary_forgets_an_edges_members_when_that_edge_lets_go(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path) as cluster:
        async with (
            watching_on_both(cluster, "forgotten") as both,
            client(cluster.primary.url, cluster.token) as primary,
        ):
            assert await shared_feeds(primary) == {"streams": 1, "members": 2}
            path = f"/api/threads/{both.thread_id}/events"
            async with watch(both.owner, path) as second:  # another member on edge one
                await second.next()
                assert await shared_feeds(primary) == {"streams": 1, "members": 3}
            await both.mine.source.response.aclose()  # edge one has no client left
            with anyio.fail_after(5):
                while await shared_feeds(primary) != {"streams": 1, "members": 1}:
                    await anyio.sleep(0.05)
            await both.post("edge two still")
            await until_text(both.theirs, "edge two still")


async def test_an_edge_whose_hold_lapsed_holds_its_clients_until_they_are_joined_again(
    tmp_path: Path,
) -> None:
    # Edge two stops long enough for the primary to drop its hold, while edge one keeps the
    # stream going: the primary forgets edge two's members and says so inside the stream. When
    # edge two runs again it holds them (told so by that control, or by the primary's missed
    # hellos, whichever it reads first) and joins them again: a member revoked meanwhile gets
    # nothing more.
    with running_cluster(tmp_path) as cluster:
        async with watching_on_both(cluster, "lapsed", quiet_s=60) as both:
            paused = cluster.edges[1].process
            assert paused is not None
            paused.send_signal(signal.SIGSTOP)
            try:
                await anyio.sleep(LEASE_S * 1.25 + 2)  # the primary checks every LEASE_S / 4
                revoke(cluster, both.member_token)
                await both.post("after the lapse")
                await until_text(both.mine, "after the lapse")
            finally:
                paused.send_signal(signal.SIGCONT)
            events = await both.theirs.until_end(timeout=15)
        assert all("after the lapse" not in event.data for event in events)
