"""Recall (issue 17): a reply's context gets the best matches from its user's other threads,
each marked with its thread and message, and the reply's usage lists them; other users'
threads are never recalled, nor shared threads or phone calls, and a reply in a shared thread
or a phone call recalls nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import apsw
import pytest

from tests.support.agent import chat_bodies, marker
from tests.support.api import Api
from tests.support.memory import jobs_ended, memory_server
from tests.support.server import ServerProcess
from voicestack.agent.recall import RECALL_HEADER
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(
    provider: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("recall")
    with memory_server(workdir, provider.api_base, "--recall", "2") as server:
        yield server


async def reply_of(api: Api, thread_id: str, text: str) -> dict[str, Any]:
    """Send `text` and wait for its reply to end; returns the reply's row."""
    sent = (await api.mutation("messages.send", {"threadId": thread_id, "text": text})).value
    with anyio.fail_after(20):
        while True:
            rows = (await api.query("messages.list", {"threadId": thread_id})).value
            reply: dict[str, Any] = next(r for r in rows if r["id"] == sent["replyId"])
            if reply["status"] in ("complete", "failed", "interrupted"):
                return reply
            await anyio.sleep(0.05)


async def test_a_reply_recalls_its_users_other_threads_marked_and_noted_in_usage(
    server: ServerProcess, provider: FakeOpenAI
) -> None:
    w = marker()
    dana_token, eli_token = server.create_token("dana"), server.create_token("eli")
    async with (
        server.client(token=dana_token) as dana_http,
        server.client(token=eli_token) as eli_http,
    ):
        dana, eli = Api(dana_http), Api(eli_http)
        pets = (await dana.mutation("threads.create", {})).value["id"]
        elis = (await eli.mutation("threads.create", {})).value["id"]
        miso = (
            await dana.mutation(
                "notes.say",
                {
                    "threadId": pets,
                    "text": f"My {w} cat is called Miso and loves tuna.",
                    "role": "user",
                },
            )
        ).value["id"]
        garden = (
            await dana.mutation(
                "notes.say", {"threadId": pets, "text": f"The {w} garden needs water on Sunday."}
            )
        ).value["id"]
        rex = (
            await eli.mutation(
                "notes.say",
                {"threadId": elis, "text": f"My {w} cat is called Rex.", "role": "user"},
            )
        ).value["id"]
        async with server.client() as admin_http:  # embedding jobs are the server's own
            await jobs_ended(Api(admin_http), [miso, garden, rex])

        asking = (await dana.mutation("threads.create", {})).value["id"]
        reply = await reply_of(dana, asking, f"What is my {w} cat called?")
        librarians = (await dana.mutation("threads.create", {"agent": "librarian"})).value["id"]
        one = await reply_of(dana, librarians, f"Which {w} cat is mine?")
        same_thread = await reply_of(dana, pets, f"Tell me about my {w} cat.")

    bodies = chat_bodies(provider, f"What is my {w} cat called?")
    system = [m["content"] for m in bodies[0]["messages"] if m["role"] == "system"]
    assert reply["status"] == "complete"
    assert system[1].splitlines() == [
        RECALL_HEADER,
        f"[thread {pets}, message {miso}] My {w} cat is called Miso and loves tuna.",
        f"[thread {pets}, message {garden}] The {w} garden needs water on Sunday.",
    ]
    recalled = reply["usage"]["recalled"]
    assert [(r["threadId"], r["messageId"]) for r in recalled] == [(pets, miso), (pets, garden)]
    assert recalled[0]["score"] > recalled[1]["score"] > 0
    # The librarian recalls one: the best is now the question asked in dana's other thread.
    assert [r["threadId"] for r in one["usage"]["recalled"]] == [asking]
    # The thread being answered is never recalled from.
    from_threads = {r["threadId"] for r in same_thread["usage"]["recalled"]}
    assert from_threads
    assert from_threads <= {asking, librarians}
    assert all(rex not in str(body) for body in chat_bodies(provider, w))


async def test_recall_keeps_to_private_threads_and_skips_shared_threads_and_phone_calls(
    server: ServerProcess, provider: FakeOpenAI
) -> None:
    w = marker()
    fay_token, gus_token = server.create_token("fay"), server.create_token("gus")
    async with (
        server.client(token=fay_token) as fay_http,
        server.client(token=gus_token) as gus_http,
    ):
        fay, gus = Api(fay_http), Api(gus_http)
        private, shared, call = [
            (await fay.mutation("threads.create", {})).value["id"] for _ in range(3)
        ]
        await fay.mutation("threads.invite", {"id": shared, "user": "gus"})
        # Phone calls are threads of the telephony user marked with their channel.
        conn = apsw.Connection(str(server.db_path))
        conn.set_busy_timeout(5000)
        conn.execute(
            "UPDATE threads SET metadata = ? WHERE id = ?",
            (json.dumps({"channel": "twilio", "callSid": "CA1"}), call),
        )
        conn.close()
        said: dict[str, str] = {}
        for thread, text in (
            (private, f"My {w} passport number ends in 42."),
            (shared, f"The {w} passport office opens at nine."),
            (call, f"Caller says the {w} passport is lost."),
        ):
            args = {"threadId": thread, "text": text, "role": "user"}
            said[thread] = (await fay.mutation("notes.say", args)).value["id"]
        async with server.client() as admin_http:
            await jobs_ended(Api(admin_http), list(said.values()))

        asking = (await fay.mutation("threads.create", {})).value["id"]
        mine = await reply_of(fay, asking, f"What about my {w} passport?")
        in_shared_by_gus = await reply_of(gus, shared, f"Where is the {w} passport?")
        in_shared_by_fay = await reply_of(fay, shared, f"Is my {w} passport safe?")
        in_call = await reply_of(fay, call, f"Which {w} passport number?")

    # Only fay's private thread is recalled: never the shared thread nor the phone call.
    assert [r["threadId"] for r in mine["usage"]["recalled"]] == [private]
    for reply in (in_shared_by_gus, in_shared_by_fay, in_call):
        assert reply["status"] == "complete"
        assert not reply["usage"].get("recalled")
    for question in ("Where is the", "Is my", "Which"):
        body = chat_bodies(provider, f"{question} {w} passport")[0]
        assert all(RECALL_HEADER not in str(m["content"]) for m in body["messages"])
        assert "ends in 42" not in str(body)
