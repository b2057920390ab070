"""ChatProvider's connections to the provider: kept for the next stream, and never waited on
after a stream's `[DONE]`."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.agent import Threads, ended, feed, marker, read_until, snapshot
from tests.test_llm import KEY, USER, MakeProvider, collect, make, read_request  # noqa: F401 (a fixture)
from voicestack.agent.llm import ChatProvider, Finish, ProviderSettings, TextDelta
from voicestack.agent.llm_wire import AFTER_DONE_TIMEOUT_S
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

DONE_THEN_OPEN = (
    b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}'
    b"\n\ndata: [DONE]\n\n"
)


async def test_streams_one_after_another_share_one_connection(
    fake: FakeOpenAI,
    make: MakeProvider,  # noqa: F811
) -> None:
    fake.script({"text": "one"}, {"text": "two"}, {"text": "three"})
    provider = make()
    for _ in range(3):
        assert (await collect(provider))[-1] == Finish("stop")
    clients = [request["client"] for request in fake.requests("chat")]
    assert len(clients) == 3
    assert clients[0] is not None
    assert clients == [clients[0]] * 3


@pytest.mark.agent_server
async def test_a_servers_replies_one_after_another_share_one_connection(
    fake: FakeOpenAI, client: httpx.AsyncClient
) -> None:
    mark = marker()
    fake.script({"match": mark, "text": "Fine.", "times": 3})
    threads = Threads(client)
    thread_id = await threads.create()
    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        for k in range(3):
            _, reply_id = await threads.send(thread_id, f"{mark} {k}")
            await read_until(stream, ended(reply_id))
    asked = [r for r in fake.requests("chat") if mark in str(r["body"]["messages"])]
    assert len(asked) == 3
    assert len({request["client"] for request in asked}) == 1


async def test_a_stream_whose_body_stays_open_after_done_ends_without_waiting_for_it() -> None:
    opened: list[asyncio.StreamWriter] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        chunk = b"%x\r\n%s\r\n" % (len(DONE_THEN_OPEN), DONE_THEN_OPEN)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + chunk
        )
        await writer.drain()
        opened.append(writer)  # the body's end never comes

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    provider = ChatProvider(ProviderSettings(base_url=base_url, api_key=KEY, timeout_s=30))
    try:
        started = time.monotonic()
        events = await collect(provider)
        took = time.monotonic() - started
    finally:
        await provider.aclose()
        for writer in opened:
            writer.close()
        server.close()
        await server.wait_closed()
    assert events == [TextDelta("hi"), Finish("stop")]
    # Not the 30 s read timeout: what follows [DONE] is waited for briefly, then let go.
    assert took < AFTER_DONE_TIMEOUT_S + 5
