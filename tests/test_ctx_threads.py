"""`ctx.threads` in server functions (DESIGN §8), end to end: the desk app (tests/apps/desk.py)
on a real server whose replies come from the fake OpenAI.

The module shares one server; each test works in threads of its own and matches its chat plans
on a marker in its own messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import apsw
import httpx
import pytest

from tests.support.agent import AGENT_ENV, Threads, agent_args, chat_bodies, marker
from tests.support.api import Api, error_of
from tests.support.server import ServerProcess, running_server
from tests.support.sse import watch
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

DESK_APP = "tests.apps.desk"


@pytest.fixture(scope="module")
def desk(
    fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The desk app's server, its replies from the fake OpenAI."""
    workdir = tmp_path_factory.mktemp("desk")
    args = agent_args(fake_openai.api_base)
    with running_server(workdir, DESK_APP, args, AGENT_ENV) as server:
        yield server


@pytest.fixture
def server(desk: ServerProcess) -> ServerProcess:
    """`client`, `api` and `threads` talk to the desk server."""
    return desk


def rows(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows read straight from the server's database file."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(5000)
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()


async def ended_thread(threads: Threads, thread_id: str, reply_id: str) -> dict[str, Any]:
    """The thread once its reply `reply_id` has ended."""
    with anyio.fail_after(10):
        while True:
            thread = await threads.get(thread_id)
            reply = next(m for m in thread["messages"] if m["id"] == reply_id)
            if reply["status"] in ("complete", "failed", "interrupted"):
                return thread
            await anyio.sleep(0.05)


async def test_a_mutation_creates_a_thread_and_sends_a_message_that_the_model_answers(
    fake: FakeOpenAI, api: Api, threads: Threads, server: ServerProcess
) -> None:
    mark = marker()
    fake.script({"match": mark, "text": "Hello from the desk."})

    opened = (await api.mutation("desk.open", {"title": "ticket", "text": f"{mark} hi"})).value

    assert sorted(opened) == ["messageId", "replyId", "threadId"]
    thread = await ended_thread(threads, opened["threadId"], opened["replyId"])
    assert (thread["title"], thread["owner"]) == ("ticket", server.user_id())
    assert [(m["id"], m["role"], m["text"], m["status"]) for m in thread["messages"]] == [
        (opened["messageId"], "user", f"{mark} hi", "complete"),
        (opened["replyId"], "assistant", "Hello from the desk.", "complete"),
    ]
    assert thread["messages"][0]["author"] == server.user_id()


async def test_a_mutation_that_fails_after_sending_leaves_no_thread_message_or_reply(
    fake: FakeOpenAI, client: httpx.AsyncClient, server: ServerProcess
) -> None:
    mark = marker()
    fake.script({"match": mark, "text": "Never asked."})

    response = await client.post(
        "/api/mutation/desk.open", json={"args": {"title": mark, "text": mark, "fail": True}}
    )

    assert error_of(response, 409, "desk_closed")["message"] == "The desk is closed."
    await anyio.sleep(0.5)  # a reply, had one been queued, would have asked the model by now
    assert chat_bodies(fake, mark) == []
    assert rows(server.db_path, "SELECT id FROM threads WHERE title = ?", mark) == []
    assert rows(server.db_path, "SELECT id FROM messages WHERE text = ?", mark) == []
    assert rows(
        server.db_path,
        "SELECT count(*) FROM jobs WHERE kind = 'reply' AND ref NOT IN (SELECT id FROM messages)",
    ) == [(0,)]


async def test_creating_a_thread_for_an_unknown_agent_rolls_the_mutation_back(
    client: httpx.AsyncClient, server: ServerProcess
) -> None:
    mark = marker()
    response = await client.post(
        "/api/mutation/desk.open", json={"args": {"title": mark, "agent": "nobody", "text": "x"}}
    )

    error_of(response, 422, "unknown_agent")
    assert rows(server.db_path, "SELECT id FROM threads WHERE title = ?", mark) == []


async def test_a_query_and_an_action_read_the_threads_messages(
    fake: FakeOpenAI, api: Api, threads: Threads
) -> None:
    mark = marker()
    fake.script({"match": mark, "text": "Noted."})
    opened = (await api.mutation("desk.open", {"text": f"{mark} note this"})).value
    thread = await ended_thread(threads, opened["threadId"], opened["replyId"])

    everything = {"threadId": opened["threadId"]}
    newest = {"threadId": opened["threadId"], "limit": 1}
    assert (await api.query("desk.messages", everything)).value == thread["messages"]
    assert (await api.query("desk.messages", newest)).value == thread["messages"][1:]
    assert (await api.action("desk.history", everything)).value == thread["messages"]
    assert (await api.action("desk.history", newest)).value == thread["messages"][1:]


async def test_a_watched_query_reads_the_thread_again_when_it_changes(
    client: httpx.AsyncClient, api: Api, threads: Threads
) -> None:
    thread_id = await threads.create()
    args = json.dumps({"threadId": thread_id})

    async with watch(client, "/api/watch/desk.messages", params={"args": args}) as stream:
        assert (await stream.next()).json["value"] == []
        await api.mutation("desk.post", {"threadId": thread_id, "text": "Hello."})
        [posted] = (await stream.next()).json["value"]

    assert (posted["role"], posted["text"]) == ("assistant", "Hello.")


async def test_an_action_generates_an_answer_and_returns_its_text(
    fake: FakeOpenAI, api: Api, threads: Threads, server: ServerProcess
) -> None:
    mark = marker()
    fake.script({"match": mark, "text": "Turn it off and on again.", "tokens_per_second": 100})

    asked = (await api.action("desk.ask", {"text": f"{mark} my router is down"})).value

    assert asked == {"threadId": asked["threadId"], "answer": "Turn it off and on again."}
    thread = await threads.get(asked["threadId"])
    assert (thread["title"], thread["owner"]) == ("desk", server.user_id())
    assert [(m["role"], m["text"], m["status"]) for m in thread["messages"]] == [
        ("user", f"{mark} my router is down", "complete"),
        ("assistant", "Turn it off and on again.", "complete"),
    ]


async def test_generate_raises_the_error_of_a_reply_that_failed(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    fake.script({"match": mark, "error": {"status": 400, "message": "The prompt is refused."}})
    thread_id = await threads.create()

    response = await client.post(
        "/api/action/desk.generate", json={"args": {"threadId": thread_id, "text": mark}}
    )

    [_asked, reply] = (await threads.get(thread_id))["messages"]
    assert reply["status"] == "failed"
    error = error_of(response, 502, reply["error"]["code"])
    assert error == reply["error"]


async def test_post_saves_a_finished_message_that_starts_no_reply(
    fake: FakeOpenAI, client: httpx.AsyncClient, api: Api, threads: Threads
) -> None:
    thread_id = await threads.create()

    greeting = (await api.mutation("desk.post", {"threadId": thread_id, "text": "Welcome!"})).value
    note = {"threadId": thread_id, "text": "Ticket opened.", "role": "system"}
    noted = (await api.action("desk.post_later", note)).value
    wrong = {"threadId": thread_id, "text": "x", "role": "tool"}
    refused = await client.post("/api/mutation/desk.post", json={"args": wrong})

    assert error_of(refused, 422, "invalid_args")["message"] == (
        "ctx.threads.post: role must be one of assistant, user, system, not 'tool'."
    )
    messages = (await threads.get(thread_id))["messages"]
    assert [(m["id"], m["role"], m["text"], m["status"]) for m in messages] == [
        (greeting["messageId"], "assistant", "Welcome!", "complete"),
        (noted["messageId"], "system", "Ticket opened.", "complete"),
    ]
    assert [r for r in fake.requests("chat") if "Welcome!" in str(r["body"])] == []


async def test_every_call_checks_the_callers_membership(
    fake: FakeOpenAI, threads: Threads, api: Api, server: ServerProcess
) -> None:
    mark = marker()
    fake.script({"match": mark, "text": "For members only.", "times": None})
    thread_id = await threads.create()
    in_thread = {"threadId": thread_id, "text": mark}
    calls = [
        ("query", "desk.messages", {"threadId": thread_id}),
        ("action", "desk.history", {"threadId": thread_id}),
        ("mutation", "desk.send", in_thread),
        ("mutation", "desk.post", in_thread),
        ("action", "desk.post_later", in_thread),
        ("action", "desk.generate", in_thread),
    ]

    async with server.client(token=server.create_token("outsider")) as outsider:
        for kind, name, args in calls:
            response = await outsider.post(f"/api/{kind}/{name}", json={"args": args})
            error_of(response, 404, "thread_not_found")
        assert (await threads.get(thread_id))["messages"] == []

        await api.mutation("threads.invite", {"id": thread_id, "user": "outsider"})
        response = await outsider.post("/api/action/desk.generate", json={"args": in_thread})
    assert response.json()["value"] == "For members only."


async def test_generate_answers_server_stopped_when_the_server_stops_before_the_reply_runs(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    first, second = marker(), marker()
    fake.script({"match": first, "text": "a b c d", "stall_after_chunks": 1, "stall_s": 60})
    args = agent_args(fake.api_base, "--drain-s", "0.2")
    with running_server(tmp_path, DESK_APP, args, AGENT_ENV) as desk:
        async with desk.client() as http:
            threads = Threads(http)
            thread_id = await threads.create()
            await threads.send(thread_id, first)  # streams, then stalls
            answers: list[httpx.Response] = []

            async def generate() -> None:
                args = {"threadId": thread_id, "text": second}
                answers.append(await http.post("/api/action/desk.generate", json={"args": args}))

            async with anyio.create_task_group() as group:
                group.start_soon(generate)
                with anyio.fail_after(10):
                    while len((await threads.get(thread_id))["messages"]) < 4:
                        await anyio.sleep(0.05)  # the second reply waits behind the first
                assert await anyio.to_thread.run_sync(desk.stop) == 0

    error = error_of(answers[0], 503, "server_stopped")
    assert error["message"] == "The server stopped before the reply ended; it runs after a restart."
    assert chat_bodies(fake, second) == []
