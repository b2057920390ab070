"""A token revoked on the database file while the server runs: its open streams end at the next
commit, and its next request is refused; the same user's other tokens go on working."""

from __future__ import annotations

import json
import secrets
import time

import anyio
import httpx
import pytest

from tests.support.agent import ended, feed, read_until, snapshot
from tests.support.api import error_of
from tests.support.cli import invoke
from tests.support.server import ServerProcess
from tests.support.sse import watch

pytestmark = [pytest.mark.anyio, pytest.mark.shared_server]

REVOCATION_WAIT_S = 3.0


async def test_revoking_a_token_ends_every_stream_it_opened_and_no_other(
    server: ServerProcess,
) -> None:
    user = f"rev-{secrets.token_hex(4)}"
    doomed, kept = server.create_token(user), server.create_token(user)
    async with (
        server.client(token=doomed) as http,
        server.client(token=kept) as other_http,
        httpx.AsyncClient(base_url=server.url, timeout=10.0) as no_header,
    ):
        created = await http.post("/api/threads", json={"title": "r"})
        thread_id = created.json()["id"]
        feed = f"/api/threads/{thread_id}/events"
        q = json.dumps([{"id": "t", "name": "threads.get", "args": {"id": thread_id}}])
        async with (
            watch(http, "/api/watch/threads.list") as single,
            watch(http, "/api/watch", params={"q": q}) as multi,
            watch(http, feed) as thread_feed,
            # EventSource sends the token in the URL: such a stream ends the same way.
            watch(no_header, feed, params={"token": doomed}) as by_query,
            watch(other_http, feed) as survivor,
        ):
            for stream in (single, multi):
                assert (await stream.next()).event == "value"
            for stream in (thread_feed, by_query, survivor):
                assert (await stream.next()).event == "ready"
            revoked = invoke(["token", "revoke", doomed, "--db", str(server.db_path)])
            assert revoked.exit_code == 0, revoked.stderr
            started = time.monotonic()
            for stream in (single, multi, thread_feed, by_query):
                await stream.ended(REVOCATION_WAIT_S)
            assert time.monotonic() - started < REVOCATION_WAIT_S
            error_of(await http.get("/api/threads"), 401, "invalid_token")
            # The user's other token still works, and its stream still follows the thread.
            sent = await other_http.post(f"/api/threads/{thread_id}/messages", json={"text": "x"})
            assert sent.status_code == 201, sent.text
            event = await survivor.next()
            assert (event.event, event.json["text"]) == ("message", "x")


async def test_feeds_opened_while_other_memberships_change_stay_open(start_server) -> None:
    """A commit that changes some thread's members is checked against every open feed in that
    commit's snapshot, which may predate a feed opened on a brand-new thread: such a feed must
    not be taken for one that lost its access."""
    server = start_server()
    async with server.client() as http, server.client() as churn_http:
        stop = anyio.Event()

        async def churn() -> None:
            while not stop.is_set():
                assert (await churn_http.post("/api/threads", json={})).status_code == 201

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(churn)
            for _ in range(60):
                thread_id = (await http.post("/api/threads", json={})).json()["id"]
                async with feed(http, thread_id) as stream:
                    await snapshot(stream)
                    sent = await http.post(
                        f"/api/threads/{thread_id}/messages", json={"text": "still here?"}
                    )
                    reply_id = sent.json()["replyId"]
                    await read_until(stream, ended(reply_id))  # no provider: it fails at once
            stop.set()
