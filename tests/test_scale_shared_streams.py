"""Scale-out (DESIGN §12): one stream of a thread on an edge, shared by clients of any users.

Clients of two users share the edge's one stream of a thread; a client whose token is revoked,
or whose user is removed from the thread, leaves it at the commit, and the others go on.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import anyio
import httpx
import pytest

from tests.support.scale import Cluster, client, new_thread, revoke, running_cluster
from tests.support.sse import Watch, watch

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("shared")) as started:
        yield started


@dataclass
class SharedWatch:
    """An owner and a member, each a user of their own, watching a new thread's feed through
    edge one: the owner's client, the thread, both feeds, and the member's token."""

    owner: httpx.AsyncClient
    thread_id: str
    mine: Watch
    theirs: Watch
    member_token: str

    async def post(self, text: str) -> None:
        """The owner posts `text` to the thread."""
        await self.owner.post(f"/api/threads/{self.thread_id}/messages", json={"text": text})


@contextlib.asynccontextmanager
async def watching_together(cluster: Cluster, member: str) -> AsyncIterator[SharedWatch]:
    """Both feeds open, with their first event read, once the edge holds no other stream."""
    owner_token = cluster.primary.create_token(f"{member}-owner")
    member_token = cluster.primary.create_token(member)
    first, _ = cluster.edges
    async with client(first.url, owner_token) as owner, client(first.url, member_token) as other:
        thread_id, path = await shared_thread(owner, member)
        await streams_closed(owner)  # of earlier tests
        async with watch(owner, path) as mine, watch(other, path) as theirs:
            await mine.next()
            await theirs.next()
            yield SharedWatch(owner, thread_id, mine, theirs, member_token)


async def until_text(feed: Watch, text: str) -> None:
    """Read `feed` until an event holding `text`."""
    while text not in (await feed.next()).data:
        pass


async def test_clients_of_different_users_share_one_stream_of_a_thread(
    cluster: Cluster,
) -> None:
    async with watching_together(cluster, "share-member") as shared:
        health = (await shared.owner.get("/healthz")).json()
        await shared.post("to both")
        await until_text(shared.mine, "to both")
        await until_text(shared.theirs, "to both")
    assert (health["threadStreams"], health["feedClients"]) == (1, 2)


async def test_a_revoked_client_leaves_a_shared_stream_that_goes_on_for_the_rest(
    cluster: Cluster,
) -> None:
    async with watching_together(cluster, "revoked-member") as shared:
        revoke(cluster, shared.member_token)
        await shared.theirs.until_end(timeout=10)
        await shared.post("still here")
        await until_text(shared.mine, "still here")


async def test_a_removed_member_leaves_a_shared_stream_at_the_commit(cluster: Cluster) -> None:
    async with watching_together(cluster, "removed-member") as shared:
        invite = {"id": shared.thread_id, "user": "removed-member"}
        left = await shared.owner.post("/api/mutation/threads.leave", json={"args": invite})
        assert left.status_code == 200, left.text
        await shared.post("secret")
        await until_text(shared.mine, "secret")
        events = await shared.theirs.until_end(timeout=10)
    assert all("secret" not in event.data for event in events)


async def shared_thread(owner: httpx.AsyncClient, member: str) -> tuple[str, str]:
    """A new thread of `owner`'s with `member` invited: its id and its feed's path."""
    thread_id = await new_thread(owner, f"shared with {member}")
    invite = {"id": thread_id, "user": member}
    invited = await owner.post("/api/mutation/threads.invite", json={"args": invite})
    assert invited.status_code == 200, invited.text
    return thread_id, f"/api/threads/{thread_id}/events"


async def streams_closed(http: httpx.AsyncClient) -> None:
    """Until `http`'s edge holds no thread stream (its clients have all gone)."""
    with anyio.fail_after(5):
        while (await http.get("/healthz")).json()["threadStreams"]:
            await anyio.sleep(0.05)
