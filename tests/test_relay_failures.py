"""Relay mode, failures: a provider `error`, a failed response, a dropped socket and a silent
provider each end the turn `failed` with the reason and tell the client; the conversation goes
on (after a drop or a silence, on a new provider connection). A provider that refuses the
connection closes the socket with 1013 `realtime_unavailable`.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from typing import Any

import pytest

from tests.support.agent import StartAgentServer, Threads
from tests.support.realtime import Conversation, conversation
from tests.support.relay import RELAY_FLAGS, client_events, relay_server, settled_thread
from tests.support.server import ServerProcess
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, relay_server]

BROKEN = {"type": "server_error", "code": "model_broke", "message": "The model broke."}


async def typed_turn(talk: Conversation, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Type `text`; the reply's `reply_stopped` and the `error` event that came with it."""
    mark = len(talk.events)
    await talk.send_json({"type": "text", "text": text})
    stopped = await talk.next_event("reply_stopped", after=mark)
    error = await talk.next_event("error", after=mark)
    return stopped, error


async def connected(fake: FakeOpenAI, count: int) -> None:
    """Wait until the relay has configured its `count`th provider connection."""
    async with asyncio.timeout(10):
        while not (
            len(sessions := fake.realtime.sessions()) >= count
            and any(e["type"] == "session.update" for e in sessions[count - 1]["client_events"])
        ):
            await asyncio.sleep(0.02)


async def test_each_failure_fails_its_turn_and_the_conversation_goes_on(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess
) -> None:
    fake.realtime.script(
        {
            "responses": [
                {"error": BROKEN},
                {"text": "Part one of an answer.", "error": BROKEN, "error_after_chunks": 2},
                {"text": "Never finished, this one.", "drop_after_chunks": 1},
            ]
        },
        {"responses": [{"text": "Silent soon, you will see.", "silent_after_chunks": 1}]},
        {"responses": [{"text": "All good now."}]},
    )
    thread_id = await threads.create()

    async with conversation(server, thread_id) as talk:
        await talk.start()
        refused = await typed_turn(talk, "one")
        failed = await typed_turn(talk, "two")
        dropped = await typed_turn(talk, "three")
        await connected(fake, 2)
        silent = await typed_turn(talk, "four")
        await connected(fake, 3)
        mark = len(talk.events)
        await talk.send_json({"type": "text", "text": "five"})
        fine = await talk.next_event("reply_stopped", after=mark)

    assert [stopped["status"] for stopped, _ in (refused, failed, dropped, silent)] == [
        "failed"
    ] * 4
    assert fine["status"] == "complete"
    codes = [error["code"] for _, error in (refused, failed, dropped, silent)]
    assert codes == [
        "realtime_error",
        "realtime_error",
        "realtime_disconnected",
        "realtime_timeout",
    ]
    assert refused[1]["message"] == "The model broke. (model_broke)"
    assert silent[1]["message"] == (
        "The realtime provider sent nothing for 3 s (--realtime-timeout-s) during the turn."
    )
    thread = await settled_thread(threads, thread_id, 10)
    replies = [m for m in thread["messages"] if m["role"] == "assistant"]
    assert [(m["status"], (m["error"] or {}).get("code")) for m in replies] == [
        ("failed", "realtime_error"),
        ("failed", "realtime_error"),
        ("failed", "realtime_disconnected"),
        ("failed", "realtime_timeout"),
        ("complete", None),
    ]
    # A failed reply keeps the transcript that streamed before the failure.
    assert "Part one of an answer.".startswith(replies[1]["text"])
    assert replies[4]["text"] == "All good now."
    assert all(m["voice"] is not None for m in replies)
    users = [m["text"] for m in thread["messages"] if m["role"] == "user"]
    assert users == ["one", "two", "three", "four", "five"]
    # The new provider session after the drop was given the conversation so far (the failed
    # replies left out), then the next typed turn.
    items = [e["item"] for e in client_events(fake, "conversation.item.create", index=1)]
    assert [(i["role"], i["content"][0]["text"]) for i in items] == [
        ("user", "one"),
        ("user", "two"),
        ("user", "three"),
        ("user", "four"),
    ]


async def test_a_provider_that_refuses_the_connection_closes_the_socket_with_1013(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess
) -> None:
    fake.realtime.script({"reject": {"status": 401, "message": "Bad key."}})
    thread_id = await threads.create()

    async with conversation(server, thread_id) as talk:
        await talk.send_json({"type": "start", "sampleRate": 16000, "format": "pcm16"})
        closed = await talk.closing()

    assert closed == (1013, "realtime_unavailable")
    assert talk.events == [
        {
            "type": "error",
            "code": "realtime_unavailable",
            "message": "The realtime provider is unavailable: the provider refused the"
            " connection (HTTP 401).",
        }
    ]
    assert (await threads.get(thread_id))["messages"] == []


async def test_sigterm_lets_the_reply_play_within_the_drain_then_saves_what_was_heard(
    fake: FakeOpenAI, start_agent_server: StartAgentServer
) -> None:
    words = " ".join(f"word{n}" for n in range(1, 41))
    fake.realtime.script({"responses": [{"text": words, "audio_ms": 8000}]})
    server = start_agent_server(fake.api_base, *RELAY_FLAGS[:4], "--drain-s", "1")
    async with server.client() as http:
        thread_id = (await http.post("/api/threads", json={})).json()["id"]

    async with conversation(server, thread_id) as talk:
        await talk.start()
        await talk.send_json({"type": "text", "text": "Talk for a while."})
        reply_id = (await talk.next_event("reply_started"))["messageId"]
        await talk.next_event("reply_audio")
        stopping = asyncio.create_task(asyncio.to_thread(server.stop, signal.SIGTERM))
        closed = await talk.closing(timeout=15)
        assert await stopping == 0

    assert closed == (1001, "server_shutting_down")
    assert talk.events[-2:] == [
        {"type": "clear"},
        {"type": "reply_stopped", "messageId": reply_id, "status": "interrupted"},
    ]
    with sqlite3.connect(server.db_path) as db:
        status, code, text = db.execute(
            "SELECT status, error_code, text FROM messages WHERE id = ?", (reply_id,)
        ).fetchone()
    # About a second of the 8 s played before the drain ran out: a few of the 40 words.
    assert (status, code) == ("interrupted", "server_stopped")
    assert 0 < len(text.split()) < 20
    assert words.startswith(text)
