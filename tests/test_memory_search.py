"""`memory.search`: full-text search over messages, limited to the threads the caller may see."""

from __future__ import annotations

import pytest

from tests.support.api import Api, error_of
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio


async def send(api: Api, thread_id: str, text: str) -> str:
    sent = await api.mutation("messages.send", {"threadId": thread_id, "text": text})
    return sent.value["messageId"]


async def search(server: ServerProcess, token: str, **args: object) -> list[dict]:
    async with server.client(token=token) as http:
        answer = await http.post("/api/query/memory.search", json={"args": args})
    assert answer.status_code == 200, answer.text
    return answer.json()["value"]


async def test_search_finds_words_ranked_in_visible_threads_only(start_server):
    server = start_server()
    dana_token = server.create_token("dana")
    async with server.client() as admin_http, server.client(token=dana_token) as dana_http:
        admin, dana = Api(admin_http), Api(dana_http)
        admins = (await admin.mutation("threads.create", {})).value["id"]
        danas = (await dana.mutation("threads.create", {})).value["id"]
        hidden = await send(admin, admins, "The router password is on the fridge.")
        mine = await send(dana, danas, "Where did I write the Wi-Fi passwords?")
        await send(dana, danas, "Unrelated words about lunch.")

        hits = await search(server, dana_token, query="password")
        assert [hit["id"] for hit in hits] == [mine]  # stemmed: "passwords" matches
        assert "[passwords]" in hits[0]["snippet"]
        assert hits[0]["threadId"] == danas

        everything = await search(server, server.token, query="password fridge")
        assert everything[0]["id"] == hidden  # two words beat one
        assert {hit["id"] for hit in everything} == {hidden, mine}

        assert await search(server, server.token, query="lunch", threadId=admins) == []
        assert await search(server, dana_token, query="?!") == []
        refused = await dana_http.post(
            "/api/query/memory.search", json={"args": {"query": "password", "threadId": admins}}
        )
        error_of(refused, 404, "thread_not_found")


async def test_search_is_reactive(start_server):
    server = start_server()
    async with server.client() as http:
        api = Api(http)
        thread_id = (await api.mutation("threads.create", {})).value["id"]
        before = await search(server, server.token, query="zeppelin")
        message_id = await send(api, thread_id, "A zeppelin flew over.")
        after = await search(server, server.token, query="zeppelin")
    assert before == []
    assert [hit["id"] for hit in after] == [message_id]
