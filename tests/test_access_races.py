"""Streams end at the exact commit that ends their access, proven as races run many times.

A removed member's thread feed, and a revoked token's watches and feed, race against commits that
land right after the removal or the revocation. Nothing of the ending commit's version or later
may reach the stream: every event received is mapped to the commit that wrote it (a watch event's
id is that version; a feed event's id is a `thread_events` row, found in the `_changes` log) and
compared with the version of the removal (in process, `threads.leave`) or of the revocation (a
foreign commit: `voicestack token revoke` writes the database file).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import httpx
import pytest
from httpx_sse import EventSource

from tests.conftest import StartServer
from tests.support.agent import feed, snapshot
from tests.support.api import Api, Result, error_of
from tests.support.cli import invoke
from tests.support.commits import row_versions, token_rowid
from tests.support.server import TEST_APP, ServerProcess
from tests.support.sse import Event, watch

pytestmark = pytest.mark.anyio

ROUNDS = 40
OPENING_ROUNDS = 20
OPEN_EVERY_S = 0.01
POSTS_PER_RACE = 3
END_WAIT_S = 5.0
# Posting as fast as the tests can must not be refused by the per-token limits.
UNLIMITED = ("--rate-mutations-per-min", "0", "--rate-replies-per-min", "0")

Leak = tuple[int, str, int, Event]  # (round, stream, version of the event, the event)
StreamRead = tuple[str, int, list[Event]]  # (path, status, events received)


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    return start_server(TEST_APP, *UNLIMITED)


def new_token(server: ServerProcess, user: str) -> str:
    """A new token for `user`, made by `voicestack token create` on the database file."""
    made = invoke(["token", "create", "--user", user, "--db", str(server.db_path)])
    assert made.exit_code == 0, made.stderr
    return made.stdout.strip()


def revoke(server: ServerProcess, token: str) -> None:
    """`voicestack token revoke`: a commit the server hears of through the change log."""
    revoked = invoke(["token", "revoke", token, "--db", str(server.db_path)])
    assert revoked.exit_code == 0, revoked.stderr


async def post(api: Api, thread_id: str, count: int) -> list[Result]:
    """Send `count` messages one after another; each one's `{"messageId", "replyId"}` and the
    version of its commit."""
    return [
        await api.mutation("messages.send", {"threadId": thread_id, "text": f"post {n}"})
        for n in range(count)
    ]


def feed_leaks(
    server: ServerProcess,
    round_: int,
    events: list[Event],
    ended_at: int,
    after: int,
    posted: Sequence[Result] = (),
) -> list[Leak]:
    """The feed events among `events` that a commit at or after `ended_at` wrote: live events
    by their id, snapshot rows (which carry none) by the message they show."""
    versions = row_versions(server.db_path, "thread_events", after)
    live = [(versions[int(e.id)], e) for e in events if e.id and e.event != "ready"]
    late = {
        message_id: sent.version
        for sent in posted
        for message_id in (sent.value["messageId"], sent.value["replyId"])
        if sent.version >= ended_at
    }
    shown = [(late[e.json["id"]], e) for e in events if not e.id and e.json.get("id") in late]
    return [(round_, "feed", version, e) for version, e in live + shown if version >= ended_at]


async def read_if_opened(
    http: httpx.AsyncClient, path: str, params: dict[str, str] | None = None
) -> tuple[int, list[Event]]:
    """Open `path` as an event stream: its status and, when it is 200, every event until the
    server ends the stream, which must be within END_WAIT_S."""
    events: list[Event] = []
    with anyio.move_on_after(END_WAIT_S) as waited:
        async with http.stream("GET", path, params=params or {}) as response:
            if response.status_code != 200:
                await response.aread()
                return response.status_code, []
            async for sse in EventSource(response).aiter_sse():
                if sse.data:  # not a keep-alive
                    events.append(Event(sse.event, sse.id, sse.data))
    assert not waited.cancelled_caught, f"{path} was not ended in {END_WAIT_S} s: {events}"
    return 200, events


def summary(leaks: list[Leak]) -> str:
    """How many rounds leaked how many events, and the first few."""
    rounds = len({leak[0] for leak in leaks})
    return f"{rounds} of {ROUNDS} rounds leaked {len(leaks)} events, first: {leaks[:3]}"


@asynccontextmanager
async def parties(
    server: ServerProcess,
) -> AsyncIterator[tuple[Api, Api, tuple[str, httpx.AsyncClient]]]:
    """A thread owner's API, an admin's, and Bob (his name and his own client), each with a
    token of their own."""
    bob = f"bob-{secrets.token_hex(4)}"
    owner_token = new_token(server, f"owner-{secrets.token_hex(4)}")
    async with (
        server.client(token=owner_token) as owner_http,
        server.client(token=new_token(server, bob)) as bob_http,
        server.client() as admin_http,
    ):
        yield Api(owner_http), Api(admin_http), (bob, bob_http)


async def run_rounds(race: Callable[[int], Awaitable[tuple[list[Leak], bool]]]) -> None:
    """Run ROUNDS rounds of `race`: none may leak, and in most of them a post must have landed
    after the cut (else the race was not run)."""
    leaks: list[Leak] = []
    raced = 0
    for round_ in range(ROUNDS):
        round_leaks, after = await race(round_)
        leaks += round_leaks
        raced += after
    assert leaks == [], summary(leaks)
    assert raced >= ROUNDS // 2, raced


async def removal_round(
    server: ServerProcess, owner: Api, admin: Api, bob: tuple[str, httpx.AsyncClient], round_: int
) -> tuple[list[Leak], bool]:
    """Bob's feed is open; the owner removes him while an admin posts. What leaked, and
    whether a post landed after the removal."""
    name, bob_http = bob
    created = await owner.mutation("threads.create", {"title": f"race {round_}"})
    thread_id = created.value["id"]
    await owner.mutation("threads.invite", {"id": thread_id, "user": name})
    async with feed(bob_http, thread_id) as bobs:
        await snapshot(bobs)
        removal, posted = await asyncio.gather(
            owner.mutation("threads.leave", {"id": thread_id, "user": name}),
            post(admin, thread_id, POSTS_PER_RACE),
        )
        received = await bobs.until_end(END_WAIT_S)
    leaks = feed_leaks(server, round_, received, removal.version, created.version)
    return leaks, any(sent.version > removal.version for sent in posted)


async def test_a_removed_members_feed_gets_nothing_of_the_removal_commit_or_later(
    server: ServerProcess,
) -> None:
    async with parties(server) as (owner, admin, (bob, bob_http)):
        await run_rounds(lambda n: removal_round(server, owner, admin, (bob, bob_http), n))


async def keep_posting(api: Api, thread_id: str, stop: anyio.Event, posted: list[int]) -> None:
    """Post into the thread until `stop` is set, recording each commit's version."""
    while not stop.is_set():
        posted += [sent.version for sent in await post(api, thread_id, 1)]


async def revocation_round(
    server: ServerProcess, admin: Api, bob: tuple[str, httpx.AsyncClient], round_: int
) -> tuple[list[Leak], bool]:
    """A new token of Bob's watches messages.list alone and with threads.get, and follows the
    thread's feed, while an admin keeps posting into the thread and the token is revoked on the
    database file. What leaked, and whether a post landed after the revocation."""
    name, bob_kept = bob
    created = await Api(bob_kept).mutation("threads.create", {"title": f"race {round_}"})
    thread_id = created.value["id"]
    doomed = new_token(server, name)
    messages = {"threadId": thread_id}
    many = [
        {"id": "msgs", "name": "messages.list", "args": messages},
        {"id": "thread", "name": "threads.get", "args": {"id": thread_id}},
    ]
    posted: list[int] = []
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(server.client(token=doomed))
        one = await stack.enter_async_context(
            watch(http, "/api/watch/messages.list", params={"args": json.dumps(messages)})
        )
        multi = await stack.enter_async_context(
            watch(http, "/api/watch", params={"q": json.dumps(many)})
        )
        bobs_feed = await stack.enter_async_context(feed(http, thread_id))
        assert (await one.next()).json["value"] == []
        assert sorted([(await multi.next()).json["id"] for _ in many]) == ["msgs", "thread"]
        await snapshot(bobs_feed)
        stop = anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(keep_posting, admin, thread_id, stop, posted)
            await anyio.to_thread.run_sync(revoke, server, doomed)
            received = {
                "watch": await one.until_end(END_WAIT_S),
                "multi": await multi.until_end(END_WAIT_S),
            }
            in_feed = await bobs_feed.until_end(END_WAIT_S)
            stop.set()
        error_of(await http.get("/api/threads"), 401, "invalid_token")
    rowid = token_rowid(server.db_path, doomed)
    revoked_at = row_versions(server.db_path, "auth_tokens", created.version)[rowid]
    leaks = [
        (round_, stream, int(event.id), event)
        for stream, events in received.items()
        for event in events
        if int(event.id) >= revoked_at
    ]
    leaks += feed_leaks(server, round_, in_feed, revoked_at, created.version)
    return leaks, any(version > revoked_at for version in posted)


async def test_a_revoked_tokens_streams_get_nothing_of_the_revocation_commit_or_later(
    server: ServerProcess,
) -> None:
    bob = f"bob-{secrets.token_hex(4)}"
    async with (
        server.client(token=new_token(server, bob)) as bob_kept,
        server.client() as admin_http,
    ):
        admin = Api(admin_http)
        await run_rounds(lambda n: revocation_round(server, admin, (bob, bob_kept), n))


async def test_a_feed_opened_while_its_member_is_removed_gets_nothing_of_the_removal_or_later(
    server: ServerProcess,
) -> None:
    """Bob opens his feed as the owner removes him and an admin posts: it is refused, or it
    opens and ends before anything of the removal's version."""
    async with parties(server) as (owner, admin, (bob, bob_http)):
        leaks: list[Leak] = []
        statuses: list[int] = []
        for round_ in range(ROUNDS):
            created = await owner.mutation("threads.create", {"title": f"race {round_}"})
            thread_id = created.value["id"]
            await owner.mutation("threads.invite", {"id": thread_id, "user": bob})
            (status, events), removal, posted = await asyncio.gather(
                read_if_opened(bob_http, f"/api/threads/{thread_id}/events"),
                owner.mutation("threads.leave", {"id": thread_id, "user": bob}),
                post(admin, thread_id, POSTS_PER_RACE),
            )
            statuses.append(status)
            leaks += feed_leaks(server, round_, events, removal.version, created.version, posted)
    assert leaks == [], summary(leaks)
    assert set(statuses) <= {200, 404}, statuses


async def open_until_refused(
    http: httpx.AsyncClient, path: str, params: dict[str, str], opened: list[StreamRead]
) -> None:
    """Open `path` again and again, every few milliseconds, until the server refuses it;
    record what each stream received."""
    refused = anyio.Event()

    async def open_one() -> None:
        status, events = await read_if_opened(http, path, params)
        opened.append((path, status, events))
        if status != 200:
            refused.set()

    async with anyio.create_task_group() as tasks:
        while not refused.is_set():
            tasks.start_soon(open_one)
            await anyio.sleep(OPEN_EVERY_S)


async def test_streams_opened_while_their_token_is_revoked_get_nothing_of_the_revocation_or_later(
    server: ServerProcess,
) -> None:
    """Watches and a feed are opened with a token, again and again, while it is revoked on the
    database file and an admin keeps posting: each is refused, or it ends before anything of
    the revocation's version."""
    bob = f"bob-{secrets.token_hex(4)}"
    async with (
        server.client(token=new_token(server, bob)) as bob_kept,
        server.client() as admin_http,
    ):
        admin = Api(admin_http)
        leaks: list[Leak] = []
        refusals: list[int] = []
        for round_ in range(OPENING_ROUNDS):
            created = await Api(bob_kept).mutation("threads.create", {"title": f"race {round_}"})
            thread_id = created.value["id"]
            doomed = new_token(server, bob)
            messages = json.dumps({"threadId": thread_id})
            many = json.dumps(
                [{"id": "msgs", "name": "messages.list", "args": {"threadId": thread_id}}]
            )
            opened: list[StreamRead] = []
            stop = anyio.Event()
            posted: list[int] = []
            async with server.client(token=doomed) as http, anyio.create_task_group() as tasks:
                tasks.start_soon(keep_posting, admin, thread_id, stop, posted)
                async with anyio.create_task_group() as openers:
                    openers.start_soon(
                        open_until_refused,
                        http,
                        "/api/watch/messages.list",
                        {"args": messages},
                        opened,
                    )
                    openers.start_soon(open_until_refused, http, "/api/watch", {"q": many}, opened)
                    openers.start_soon(
                        open_until_refused, http, f"/api/threads/{thread_id}/events", {}, opened
                    )
                    await anyio.to_thread.run_sync(revoke, server, doomed)
                stop.set()
            rowid = token_rowid(server.db_path, doomed)
            revoked_at = row_versions(server.db_path, "auth_tokens", created.version)[rowid]
            for path, status, events in opened:
                refusals.append(status)
                if path.endswith("/events"):
                    leaks += feed_leaks(server, round_, events, revoked_at, created.version)
                else:
                    leaks += [
                        (round_, path, int(e.id), e) for e in events if int(e.id) >= revoked_at
                    ]
    assert leaks == [], summary(leaks)
    assert set(refusals) <= {200, 401}, sorted(set(refusals))
