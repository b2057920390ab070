"""Semantic memory on a server that embeds (issue 17): embedding jobs, hybrid, vector and text
search with scores, who may find what, a watched search, and jobs that fail and are retried.

One server for the module, embedding through a fake OpenAI of its own; each test works in
threads of its own and searches for words no other test uses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from tests.support.agent import marker
from tests.support.api import Api, error_of
from tests.support.memory import EMBEDDING_MODEL, ids, jobs_ended, memory_server, search
from tests.support.server import ServerProcess
from tests.support.sse import watch
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
    with memory_server(tmp_path_factory.mktemp("memory"), provider.api_base) as server:
        yield server


async def new_thread(api: Api) -> str:
    thread_id: str = (await api.mutation("threads.create", {})).value["id"]
    return thread_id


async def say(api: Api, thread_id: str, text: str, role: str = "assistant") -> str:
    args = {"threadId": thread_id, "text": text, "role": role}
    message_id: str = (await api.mutation("notes.say", args)).value["id"]
    return message_id


def chunk_rows(db_path: Path, message_id: str) -> list[tuple[int, str, int]]:
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return list(
            conn.execute(
                "SELECT seq, model, dimensions FROM memory_chunks WHERE message_id = ?"
                " ORDER BY seq",
                (message_id,),
            )
        )
    finally:
        conn.close()


async def test_completed_messages_are_embedded_and_found_by_meaning_words_or_both(
    server: ServerProcess,
) -> None:
    async with server.client() as http:
        api = Api(http)
        thread_id = await new_thread(api)
        w = marker()
        router = await say(
            api, thread_id, f"The {w} router password is written on the fridge door."
        )
        passwords = await say(
            api, thread_id, f"Where did I keep my {w}routerpasswords list?", "user"
        )
        lunch = await say(api, thread_id, "Lunch tomorrow is pasta with tomatoes.")
        long_text = " ".join(f"sentence number {i} about gardening." for i in range(300))
        garden = await say(api, thread_id, long_text)
        jobs = await jobs_ended(api, [router, passwords, lunch, garden])

        text = await search(http, query=f"{w} fridge", mode="text", threadId=thread_id)
        vector = await search(
            http, query="router password fridge", mode="vector", threadId=thread_id
        )
        hybrid = await search(http, query=f"{w} fridge password", threadId=thread_id)
        strict = await search(http, query=f"{w} fridge password", threadId=thread_id, minScore=0.75)
        health = (await http.get("/healthz?details=1")).json()

    assert {job["attempts"] for job in jobs.values()} == {1}
    assert ids(text) == [router]
    assert text[0]["source"] == "message"
    assert text[0]["snippet"].count("[") == 2  # the marker and "fridge"
    assert vector[0]["id"] == router
    assert all(0 < hit["score"] <= 1 for hit in vector)
    assert [h["score"] for h in vector] == sorted((h["score"] for h in vector), reverse=True)
    # Ranked first by both lists: the fused score is the largest possible.
    assert (hybrid[0]["id"], hybrid[0]["score"]) == (router, 1.0)
    assert ids(strict) == [router]
    assert chunk_rows(server.db_path, router) == [(0, EMBEDDING_MODEL, 1536)]
    seqs = chunk_rows(server.db_path, garden)
    assert len(seqs) > 3  # a long message is embedded in chunks
    assert [s[0] for s in seqs] == list(range(len(seqs)))
    memory = health["details"]["memory"]
    assert (memory["mode"], memory["embeddingModel"], memory["dimensions"]) == (
        "hybrid",
        EMBEDDING_MODEL,
        1536,
    )
    assert memory["chunks"] >= 4


async def test_users_find_only_what_they_may_read_and_admins_everything(
    server: ServerProcess,
) -> None:
    dana_token, eli_token = server.create_token("dana"), server.create_token("eli")
    w = marker()
    async with (
        server.client() as admin_http,
        server.client(token=dana_token) as dana_http,
        server.client(token=eli_token) as eli_http,
    ):
        admin, dana = Api(admin_http), Api(dana_http)
        admins = await new_thread(admin)
        danas = await new_thread(dana)
        secret = await say(admin, admins, f"The {w} vault combination is 4512.")
        mine = await say(dana, danas, f"My {w} vault key hangs by the door.")
        note = (await dana.mutation("notes.remember", {"text": f"{w} vault: ask the bank"})).value[
            "id"
        ]
        shared_note = (
            await admin.mutation("notes.remember", {"text": f"{w} vault audit", "threadId": admins})
        ).value["id"]
        await jobs_ended(admin, [secret, mine, note, shared_note])

        found = {
            (who, mode): set(ids(await search(http, query=f"{w} vault", mode=mode)))
            for who, http in (("admin", admin_http), ("dana", dana_http), ("eli", eli_http))
            for mode in ("hybrid", "vector", "text")
        }
        refused = await dana_http.post(
            "/api/query/memory.search", json={"args": {"query": "vault", "threadId": admins}}
        )
        await admin.mutation("threads.invite", {"id": admins, "user": "eli"})
        invited = set(ids(await search(eli_http, query=f"{w} vault", mode="vector")))

    for mode in ("hybrid", "vector", "text"):
        assert found["dana", mode] == {mine, note}, mode
        assert found["admin", mode] >= {secret, mine, note, shared_note}, mode
        assert found["eli", mode] & {secret, mine, note, shared_note} == set(), mode
    error_of(refused, 404, "thread_not_found")
    assert invited >= {secret, shared_note}
    assert not invited & {mine, note}


async def test_a_watched_search_updates_when_a_matching_message_is_embedded(
    server: ServerProcess,
) -> None:
    w = marker()
    args = json.dumps({"query": f"{w} zeppelin", "mode": "vector", "minScore": 0.3})
    async with server.client() as http:
        api = Api(http)
        thread_id = await new_thread(api)
        async with watch(http, "/api/watch/memory.search", params={"args": args}) as stream:
            first = (await stream.next(10)).json["value"]
            message_id = await say(api, thread_id, f"A {w} zeppelin flew over the harbour.")
            while True:
                value = (await stream.next(15)).json["value"]
                if value:
                    break
    assert first == []
    assert ids(value) == [message_id]
    assert value[0]["score"] > 0.3


async def test_embedding_jobs_fail_with_the_providers_reason_and_are_retried(
    server: ServerProcess, provider: FakeOpenAI
) -> None:
    flaky, wrong, once = marker(), marker(), marker()
    provider.script(
        {"kind": "embedding", "match": flaky, "error": {"status": 500}},
        {"kind": "embedding", "match": wrong, "vector_dimensions": 3, "times": None},
        {"kind": "embedding", "match": once, "vector_dimensions": 3},
    )
    async with server.client() as http:
        api = Api(http)
        thread_id = await new_thread(api)
        # One at a time: concurrent jobs share a provider request, and so its answer.
        recovered = await say(api, thread_id, f"The {flaky} boiler was serviced in May.")
        jobs = await jobs_ended(api, [recovered], timeout=30)
        broken = await say(api, thread_id, f"The {wrong} boiler needs a new valve.")
        jobs |= await jobs_ended(api, [broken], ("failed",), timeout=30)
        found = await search(http, query=f"{flaky} boiler", mode="vector", threadId=thread_id)
        refused = await http.post(
            "/api/action/memory.embed", json={"args": {"source": "message", "id": recovered}}
        )
        # A query vector of the wrong size is the query's error; it is not cached, so the same
        # query asks again and, answered at the right size, succeeds.
        args = {"query": f"{once} boiler", "mode": "vector", "threadId": thread_id}
        wrong_query = await http.post("/api/query/memory.search", json={"args": args})
        again = await search(http, **args)

    done, failed = jobs[recovered], jobs[broken]
    assert (done["status"], done["attempts"]) == ("done", 2)
    assert done["lastError"].startswith(
        "provider_error: The embedding provider at http://127.0.0.1"
    )
    assert (failed["status"], failed["attempts"]) == ("failed", 3)
    assert failed["lastError"].startswith(
        "embedding_wrong_size: The embedding provider at http://127.0.0.1"
    )
    assert (
        "returned a vector of 3 dimensions from 'text-embedding-3-small', but the memory"
        in (failed["lastError"])
    )
    assert "voicestack memory reindex" in failed["lastError"]
    assert ids(found)[0] == recovered
    assert broken not in ids(found)
    error_of(refused, 403, "job_only")
    error = error_of(wrong_query, 502, "embedding_wrong_size")
    assert "returned a vector of 3 dimensions" in error["message"]
    assert ids(again)[0] == recovered


async def test_a_provider_that_refuses_base64_is_asked_for_numbers_from_then_on(
    server: ServerProcess, provider: FakeOpenAI
) -> None:
    # Last in the module: the server keeps asking this provider for plain numbers afterwards.
    plain = marker()
    provider.script(
        {"kind": "embedding", "match": plain, "encodings": ["float"], "times": None},
    )
    provider.state.clear_requests()
    async with server.client() as http:
        api = Api(http)
        thread_id = await new_thread(api)
        message_id = await say(api, thread_id, f"The {plain} kettle descaled overnight.")
        jobs = await jobs_ended(api, [message_id], timeout=30)
        found = await search(http, query=f"{plain} kettle", mode="vector", threadId=thread_id)

    formats = [r["body"]["encoding_format"] for r in provider.requests("embedding")]
    assert jobs[message_id]["status"] == "done"
    assert jobs[message_id]["attempts"] == 1
    assert formats[:2] == ["base64", "float"]
    assert set(formats[2:]) == {"float"}
    assert ids(found)[0] == message_id
    assert "refused a base64 request (400" in server.log()
