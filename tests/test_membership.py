"""Thread membership: who sees a thread, invite and leave, streams that end when a member
leaves, and tools that act as the user whose message started the reply.

The membership tests share one server and work with users and threads of their own; the tool
test starts a server whose replies come from the fake model, with the `testtools_access` tool.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest

from tests.support.agent import StartAgentServer, Threads, ask, marker, tool_call_rows
from tests.support.api import error_of
from tests.support.server import ServerProcess
from tests.support.sse import watch
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, pytest.mark.shared_server]

LEAVE_WAIT_S = 3.0


class User:
    """A user of the shared server: a name and a client authenticated with their own token."""

    def __init__(self, name: str, client: httpx.AsyncClient) -> None:
        self.name = name
        self.http = client

    async def call(self, kind: str, name: str, args: dict[str, Any]) -> httpx.Response:
        """POST /api/{kind}/{name} with `args`, whatever the answer."""
        return await self.http.post(f"/api/{kind}/{name}", json={"args": args})

    async def value(self, kind: str, name: str, args: dict[str, Any]) -> Any:
        """The value of a call that must succeed."""
        response = await self.call(kind, name, args)
        assert response.status_code == 200, response.text
        return response.json()["value"]

    async def new_thread(self, title: str = "t") -> str:
        """A thread this user owns."""
        return (await self.value("mutation", "threads.create", {"title": title}))["id"]

    async def visible(self, thread_id: str) -> bool:
        """Whether GET /api/threads/{id} shows the thread (else it must be 404 not found)."""
        response = await self.http.get(f"/api/threads/{thread_id}")
        if response.status_code == 200:
            return True
        error_of(response, 404, "thread_not_found")
        return False

    async def listed(self) -> list[str]:
        """The ids `threads.list` gives this user."""
        return [t["id"] for t in await self.value("query", "threads.list", {"limit": 200})]


@asynccontextmanager
async def users(server: ServerProcess, *roles: str) -> AsyncIterator[list[User]]:
    """New users (unique names; "admin" in `roles` makes an admin), each with a client."""
    async with AsyncExitStack() as stack:
        made = []
        for role in roles:
            name = f"{role}-{secrets.token_hex(4)}"
            token = server.create_token(name, admin=role == "admin")
            made.append(User(name, await stack.enter_async_context(server.client(token=token))))
        yield made


async def test_the_owner_invites_and_removes_members_and_others_never_see_the_thread(
    server: ServerProcess,
) -> None:
    async with users(server, "owner", "member", "other", "admin") as (owner, member, other, admin):
        thread_id = await owner.new_thread()
        assert [await u.visible(thread_id) for u in (owner, member, other, admin)] == [
            True,
            False,
            False,
            True,
        ]
        invite = {"id": thread_id, "user": member.name}
        error_of(await member.call("mutation", "threads.invite", invite), 404, "thread_not_found")
        assert await owner.value("mutation", "threads.invite", invite) == {
            "id": thread_id,
            "user": member.name,
            "role": "member",
        }
        assert await member.visible(thread_id)
        assert thread_id in await member.listed()
        assert thread_id not in await other.listed()
        assert thread_id in await admin.listed()

        # A member may not invite, nor remove anyone; nobody invites a user who does not exist.
        to_other = {"id": thread_id, "user": other.name}
        error_of(await member.call("mutation", "threads.invite", to_other), 403, "forbidden")
        error_of(await member.call("mutation", "threads.leave", to_other), 403, "forbidden")
        nobody = {"id": thread_id, "user": f"nobody-{secrets.token_hex(4)}"}
        error_of(await owner.call("mutation", "threads.invite", nobody), 404, "user_not_found")

        own = {"id": thread_id}
        error_of(await owner.call("mutation", "threads.leave", own), 409, "owner_cannot_leave")
        error_of(await admin.call("mutation", "threads.leave", own), 404, "member_not_found")
        assert await member.value("mutation", "threads.leave", own) == {
            "id": thread_id,
            "user": member.name,
        }
        assert not await member.visible(thread_id)
        assert thread_id not in await member.listed()

        await owner.value("mutation", "threads.invite", invite)
        assert await owner.value("mutation", "threads.leave", invite) == {
            "id": thread_id,
            "user": member.name,
        }
        assert not await member.visible(thread_id)
        error_of(await owner.call("mutation", "threads.leave", invite), 404, "member_not_found")
        # An admin adds and removes members of any thread.
        await admin.value("mutation", "threads.invite", to_other)
        assert await other.visible(thread_id)
        await admin.value("mutation", "threads.leave", to_other)
        assert not await other.visible(thread_id)


@pytest.mark.parametrize("removed_by", ["self", "owner"])
async def test_leaving_ends_the_members_feed_of_the_thread_and_only_theirs(
    server: ServerProcess, removed_by: str
) -> None:
    async with users(server, "owner", "member") as (owner, member):
        thread_id = await owner.new_thread()
        await owner.value("mutation", "threads.invite", {"id": thread_id, "user": member.name})
        path = f"/api/threads/{thread_id}/events"
        async with watch(member.http, path) as theirs, watch(owner.http, path) as mine:
            assert (await theirs.next()).event == "ready"
            assert (await mine.next()).event == "ready"
            if removed_by == "self":
                await member.value("mutation", "threads.leave", {"id": thread_id})
            else:
                removal = {"id": thread_id, "user": member.name}
                await owner.value("mutation", "threads.leave", removal)
            await theirs.ended(LEAVE_WAIT_S)
            sent = await owner.http.post(f"/api/threads/{thread_id}/messages", json={"text": "x"})
            assert sent.status_code == 201, sent.text
            event = await mine.next()
            assert (event.event, event.json["text"]) == ("message", "x")
        async with member.http.stream("GET", path) as refused:
            assert refused.status_code == 404


async def test_a_watch_on_a_thread_the_user_left_sends_the_error_then_ends(
    server: ServerProcess,
) -> None:
    async with users(server, "owner", "member") as (owner, member):
        thread_id = await owner.new_thread()
        await owner.value("mutation", "threads.invite", {"id": thread_id, "user": member.name})
        one = {"args": json.dumps({"id": thread_id})}
        many = [
            {"id": "all", "name": "threads.list", "args": {}},
            {"id": "msgs", "name": "messages.list", "args": {"threadId": thread_id}},
        ]
        async with (
            watch(member.http, "/api/watch/threads.get", params=one) as single,
            watch(member.http, "/api/watch", params={"q": json.dumps(many)}) as multi,
            watch(member.http, "/api/watch/threads.list") as listing,
        ):
            assert (await single.next()).json["value"]["id"] == thread_id
            first = [(await multi.next()).json["id"] for _ in many]
            assert sorted(first) == ["all", "msgs"]
            assert [t["id"] for t in (await listing.next()).json["value"]] == [thread_id]

            await member.value("mutation", "threads.leave", {"id": thread_id})
            gone = {"code": "thread_not_found", "message": f"No thread has id {thread_id!r}."}
            ended = await single.next(LEAVE_WAIT_S)
            assert (ended.event, ended.json["error"]) == ("error", gone)
            await single.ended(LEAVE_WAIT_S)
            last = [await multi.next(LEAVE_WAIT_S) for _ in many]
            assert sorted((e.event, e.json["id"], e.json.get("error")) for e in last) == [
                ("error", "msgs", gone),
                ("value", "all", None),
            ]
            await multi.ended(LEAVE_WAIT_S)
            # A watch that does not depend on the thread goes on, without it.
            assert (await listing.next()).json["value"] == []
            await listing.quiet(0.3)

        refused = await member.http.get("/api/watch/threads.get", params=one)
        error_of(refused, 404, "thread_not_found")


async def test_tools_act_as_the_user_whose_message_started_the_reply(
    fake: FakeOpenAI, start_agent_server: StartAgentServer
) -> None:
    server = start_agent_server(fake.api_base, env={"VOICESTACK_LOAD_TOOLS": "testtools_access"})
    ana, bo = server.create_token("ana"), server.create_token("bo")
    async with server.client(token=ana) as as_ana, server.client(token=bo) as as_bo:
        anas, bos = Threads(as_ana), Threads(as_bo)
        hers = await anas.create("hers")
        his = await bos.create("his")
        mark = marker()
        fake.script(
            {
                "match": mark,
                "tool_calls": [
                    {"name": "read_thread", "arguments": {"id": his}, "id": "c_his"},
                    {"name": "read_thread", "arguments": {"id": hers}, "id": "c_hers"},
                ],
            },
            {"match": mark, "text": "Read."},
        )
        _, _, _, events = await ask(as_ana, anas, f"{mark} read both")
        assert _finished_calls(events) == {
            "c_his": ("failed", None, f"ThreadNotFound: No thread has id {his!r}."),
            "c_hers": ("done", {"id": hers, "title": "hers", "reader": "ana"}, None),
        }

    # The role comes from the user's row too: an admin's tool reads any thread.
    mark = marker()
    fake.script(
        {
            "match": mark,
            "tool_calls": [{"name": "read_thread", "arguments": {"id": his}, "id": "c"}],
        },
        {"match": mark, "text": "Read."},
    )
    async with server.client() as as_admin:
        _, _, _, events = await ask(as_admin, Threads(as_admin), f"{mark} read his")
    assert _finished_calls(events) == {
        "c": ("done", {"id": his, "title": "his", "reader": "admin"}, None),
    }


def _finished_calls(events: list[Any]) -> dict[str, tuple[str, Any, str | None]]:
    return {
        row["callId"]: (row["status"], row["result"], row["error"])
        for row in tool_call_rows(events)
        if row["status"] in ("done", "failed")
    }
