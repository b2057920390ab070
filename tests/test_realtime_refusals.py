"""The audio socket refuses what it cannot serve: bad tokens, non-members, bad frames, more
sessions than a token may hold; and a dropped socket leaves its reply `interrupted`."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.agent import StartAgentServer, Threads, marker
from tests.support.realtime import conversation, socket_url
from tests.support.server import ServerProcess
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, pytest.mark.agent_server()]


async def test_a_bad_token_is_closed_with_4401(threads: Threads, server: ServerProcess) -> None:
    thread_id = await threads.create()
    async with conversation(server, thread_id, token="not-a-token") as talk:
        assert await talk.closing() == (4401, "invalid_token")
    assert talk.kinds() == ["error"]
    assert talk.events[0]["code"] == "invalid_token"


async def test_no_token_is_closed_with_4401(threads: Threads, server: ServerProcess) -> None:
    thread_id = await threads.create()
    url = socket_url(server, thread_id).partition("?")[0]
    async with connect(url) as socket:
        error = json.loads(await socket.recv())
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    assert error["code"] == "unauthorized"
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "unauthorized")


async def test_a_non_member_is_closed_with_4404(threads: Threads, server: ServerProcess) -> None:
    thread_id = await threads.create()
    stranger = server.create_token(f"stranger-{marker()}")
    async with conversation(server, thread_id, token=stranger) as talk:
        assert await talk.closing() == (4404, "thread_not_found")
    assert [e["code"] for e in talk.events] == ["thread_not_found"]


@pytest.mark.parametrize(
    ("first", "code", "close"),
    [
        (b"\x00\x00", "start_expected", 1008),
        ('{"type": "played", "messageId": "m", "ms": 1}', "start_expected", 1008),
        ('{"type": "start", "sampleRate": 16000, "format": "opus"}', "unsupported_format", 1008),
        (
            '{"type": "start", "sampleRate": 44100, "format": "pcm16"}',
            "unsupported_sample_rate",
            1008,
        ),
        ("not json", "invalid_json", 1008),
        ("[1, 2]", "invalid_message", 1008),
    ],
)
async def test_a_session_must_begin_with_a_valid_start(
    threads: Threads, server: ServerProcess, first: bytes | str, code: str, close: int
) -> None:
    thread_id = await threads.create()
    async with conversation(server, thread_id) as talk:
        await talk.socket.send(first)
        assert await talk.closing() == (close, code)
    assert [e["code"] for e in talk.events] == [code]


async def test_a_frame_over_64_kib_closes_with_1009(
    threads: Threads, server: ServerProcess
) -> None:
    thread_id = await threads.create()
    async with conversation(server, thread_id) as talk:
        await talk.start()
        await talk.socket.send(bytes(64 * 1024 + 2))
        assert await talk.closing() == (1009, "frame_too_large")
    assert talk.kinds() == ["ready", "error"]


async def test_bad_control_messages_get_errors_and_bad_json_closes(
    threads: Threads, server: ServerProcess
) -> None:
    thread_id = await threads.create()
    async with conversation(server, thread_id) as talk:
        await talk.start()
        await talk.send_json({"type": "dance"})
        await talk.send_json({"type": "played", "messageId": 3})
        await talk.send_json({"type": "start", "sampleRate": 16000, "format": "pcm16"})
        await talk.socket.send("{not json")
        assert await talk.closing() == (1008, "invalid_json")
    assert [e.get("code") for e in talk.events] == [
        None,
        "unknown_message",
        "invalid_message",
        "already_started",
        "invalid_json",
    ]


async def test_stop_ends_the_session_normally(threads: Threads, server: ServerProcess) -> None:
    thread_id = await threads.create()
    async with conversation(server, thread_id) as talk:
        await talk.start()
        await talk.send_json({"type": "stop"})
        assert await talk.closing() == (1000, "stopped")


async def test_a_dropped_socket_leaves_its_reply_interrupted_with_its_text(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess, client: httpx.AsyncClient
) -> None:
    mark = marker()
    words = " ".join(f"word{n}." for n in range(60))
    fake.script({"match": mark, "text": words, "tokens_per_second": 20})
    thread_id = await threads.create()

    async with conversation(server, thread_id) as talk:
        await talk.start()
        await talk.send_json({"type": "text", "text": f"Count {mark}"})
        reply_id = (await talk.next_event("reply_started"))["messageId"]
        await talk.next_event("reply_audio")
        talk.socket.transport.abort()  # gone, without a close frame

    async with asyncio.timeout(10):
        while (reply := (await threads.get(thread_id))["messages"][1])["status"] == "streaming":
            await asyncio.sleep(0.05)
    assert reply["id"] == reply_id
    assert reply["status"] == "interrupted"
    assert reply["error"]["code"] == "conversation_ended"
    assert reply["text"].startswith("word0.")
    assert words.startswith(reply["text"])
    assert reply["text"] != words
    assert (await client.get("/healthz")).status_code == 200
    async with conversation(server, thread_id) as again:
        await again.start()


async def test_sessions_count_against_the_streams_of_a_token(
    fake: FakeOpenAI, start_agent_server: StartAgentServer
) -> None:
    server = start_agent_server(fake.api_base, "--max-streams-per-token", "1")
    async with server.client() as http:
        thread_id = (await http.post("/api/threads", json={})).json()["id"]
    async with conversation(server, thread_id) as first:
        await first.start()
        async with conversation(server, thread_id) as second:
            assert await second.closing() == (4429, "too_many_streams")
        assert second.events[0]["code"] == "too_many_streams"
    # The first session's count is released once the server has seen it close.
    async with asyncio.timeout(10):
        while True:
            async with conversation(server, thread_id) as third:
                await third.send_json({"type": "start", "sampleRate": 16000, "format": "pcm16"})
                event = await third.wait_for(lambda e: True)
            if event["type"] == "ready":
                break
            await asyncio.sleep(0.05)
