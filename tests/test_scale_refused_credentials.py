"""Scale-out (DESIGN §12): an edge refuses itself a credential that a primary has refused.

Once a primary has refused a token as unknown or revoked, or a sign-in session as ended, the
edge answers every later request with it, on any route (calls, both event streams, the audio
socket), with the primary's own 401, and asks the primary nothing. Refusals of the request
rather than of the credential (no token at all, say) are not kept, routes that take no
credential are always the primary's to answer, and no refusal outlives the edge hearing of a
primary process it did not know.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.agent import marker
from tests.support.scale import (
    Cluster,
    age_session,
    client,
    new_thread,
    revoke,
    running_cluster,
    sign_in,
)
from voicestack.scale.nats_sync import settled

pytestmark = pytest.mark.anyio

# What edges ask primaries: calls (any primary's, or one's own), stream openings, sockets.
ASKED = ("voicestack.call", "voicestack.call.*", "voicestack.open", "voicestack.socket")
SESSION_DAYS = 14  # the servers' default --session-days


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("refused")) as started:
        yield started


class Asked:
    """How many requests edges have sent primaries since it began listening."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.count = 0

    async def on_message(self, msg: Msg) -> None:
        self.count += 1

    async def settled(self) -> int:
        """The count once every request made so far has reached this listener: NATS delivers
        them before the answer to a flush that follows them."""
        await settled(self.nc)
        await anyio.sleep(0.2)  # and their callbacks have run
        return self.count


@contextlib.asynccontextmanager
async def counting(cluster: Cluster) -> AsyncIterator[Asked]:
    nc = await nats.connect(cluster.nats.url)
    asked = Asked(nc)
    try:
        for subject in ASKED:
            await nc.subscribe(subject, cb=asked.on_message)
        await settled(nc)
        yield asked
    finally:
        await nc.close()


async def _refused_by_the_primary(cluster: Cluster, headers: dict[str, str]) -> None:
    """Wait until the primary itself refuses the credential: it has taken in the commit (made
    by another process, and noticed there a moment later) that ended it."""
    async with httpx.AsyncClient(base_url=cluster.primary.url, headers=headers) as http:
        with anyio.fail_after(5):
            while (await http.get("/api/threads")).status_code != 401:
                await anyio.sleep(0.01)


async def _health(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:
        body: dict[str, Any] = (await http.get("/healthz")).json()
        return body


async def _socket_refusal(url: str) -> tuple[dict[str, Any], int | None, str | None]:
    """The first event of an audio socket, and the code and reason it was closed with."""
    async with connect(url) as socket:
        first = httpx.Response(200, content=await socket.recv()).json()
        with contextlib.suppress(ConnectionClosed):
            await socket.recv()
        return first, socket.close_code, socket.close_reason


async def test_a_revoked_token_is_refused_by_the_edge_on_every_route_once_refused(
    cluster: Cluster,
) -> None:
    edge = cluster.edges[0]
    async with client(edge.url, cluster.token) as admin:
        thread_id = await new_thread(admin, "refused here")
    token = cluster.primary.create_token(f"gone-{marker()}")
    revoke(cluster, token)
    async with client(cluster.primary.url, token) as direct:
        expected = (await direct.get("/api/threads")).json()
    assert expected["error"]["code"] == "invalid_token"
    before = await _health(edge.url)

    async with counting(cluster) as asked, client(edge.url, token) as http:
        first = await http.get("/api/threads")
        assert (first.status_code, first.json()) == (401, expected)
        assert await asked.settled() == 1  # the primary was asked once

        answers = [
            await http.post("/api/mutation/threads.create", json={"args": {}}),
            await http.get("/api/watch/threads.list"),
            await http.get(f"/api/threads/{thread_id}/events"),
        ]
        anonymous = httpx.AsyncClient(base_url=edge.url, timeout=10.0)
        async with anonymous:
            answers.append(
                await anonymous.get(f"/api/threads/{thread_id}/events", params={"token": token})
            )
        socket_url = f"{edge.url.replace('http', 'ws', 1)}/api/threads/{thread_id}/audio"
        event, code, reason = await _socket_refusal(f"{socket_url}?token={token}")
        assert await asked.settled() == 1  # and never again

    for answer in answers:
        assert (answer.status_code, answer.json()) == (401, expected), answer.request.url
        assert answer.headers["www-authenticate"] == 'Bearer realm="voicestack"'
    error = expected["error"]
    assert event == {"type": "error", "code": error["code"], "message": error["message"]}
    assert (code, reason) == (4401, "invalid_token")
    after = await _health(edge.url)
    assert after["refusedHere"] - before["refusedHere"] == 5
    assert after["refusedCredentials"] >= 1
    # The other edge has not been told: it asks the primary, and then knows too.
    async with counting(cluster) as asked, client(cluster.edges[1].url, token) as other:
        assert (await other.get("/api/threads")).status_code == 401
        assert (await other.get("/api/threads")).status_code == 401
        assert await asked.settled() == 1


async def test_refusals_of_the_request_are_not_kept_and_good_tokens_pass(
    cluster: Cluster,
) -> None:
    edge = cluster.edges[0]
    before = await _health(edge.url)
    async with (
        counting(cluster) as asked,
        httpx.AsyncClient(base_url=edge.url, timeout=10.0) as anonymous,
    ):
        for _ in range(3):
            refused = await anonymous.get("/api/threads")
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "unauthorized"
        assert await asked.settled() == 3  # each one asked

    unknown = f"vs_{marker()}"
    async with client(edge.url, unknown) as stranger, client(edge.url, cluster.token) as admin:
        assert (await stranger.get("/api/threads")).status_code == 401
        assert (await admin.get("/api/threads")).status_code == 200
        assert (await stranger.get("/api/threads")).status_code == 401
        assert (await admin.get("/api/threads")).status_code == 200
    after = await _health(edge.url)
    assert after["refusedHere"] - before["refusedHere"] == 1  # the stranger's second


async def test_an_ended_sign_in_is_refused_here_after_the_primary_refused_it(
    cluster: Cluster,
) -> None:
    edge = cluster.edges[1]
    name = f"ended-{marker()}"
    cluster.primary.create_token(name)
    secret = sign_in(cluster, name)
    cookie = {"Cookie": f"vs_session={secret}"}
    async with httpx.AsyncClient(base_url=edge.url, timeout=10.0, headers=cookie) as http:
        assert (await http.get("/api/threads")).status_code == 200
        age_session(cluster, secret, (SESSION_DAYS + 1) * 86_400)
        await _refused_by_the_primary(cluster, cookie)
        async with counting(cluster) as asked:
            ended = await http.get("/api/threads")
            assert ended.status_code == 401
            assert ended.json()["error"]["code"] == "session_ended"
            again = await http.get("/api/watch/threads.list")
            assert (again.status_code, again.json()) == (401, ended.json())
            assert await asked.settled() == 1
            # Routes that take no credential are the primary's to answer, whatever the
            # request carries: the page (to sign in again), the OpenAPI document.
            page = await http.get("/")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert (await http.get("/openapi.json")).status_code == 200
            assert await asked.settled() == 3


async def test_a_primary_process_the_edge_did_not_know_makes_it_ask_again(
    cluster: Cluster,
) -> None:
    edge = cluster.edges[0]
    token = cluster.primary.create_token(f"again-{marker()}")
    revoke(cluster, token)
    async with client(edge.url, token) as http:
        assert (await http.get("/api/threads")).status_code == 401
        async with counting(cluster) as asked:
            assert (await http.get("/api/threads")).status_code == 401
            assert await asked.settled() == 0
        second = cluster.second_primary()
        second.start()
        try:
            await anyio.sleep(2.5)  # its hellos reach the edge
            async with counting(cluster) as asked:
                assert (await http.get("/api/threads")).status_code == 401
                assert (await http.get("/api/threads")).status_code == 401
                assert await asked.settled() == 1
        finally:
            second.stop()
