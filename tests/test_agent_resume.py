"""Resuming the thread feed: with Last-Event-ID or `?since=` a client gets exactly what it missed,
also across a server restart that interrupted a streaming reply."""

from __future__ import annotations

import signal
from collections.abc import Sequence

import anyio
import anyio.to_thread
import httpx
import pytest

from tests.support.agent import (
    FINAL,
    StartAgentServer,
    Threads,
    chat_bodies,
    count_deltas,
    ended,
    feed,
    marker,
    message_rows,
    read_until,
    snapshot,
    streamed,
    words,
)
from tests.support.sse import Event
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, pytest.mark.agent_server()]


def wire(events: Sequence[Event]) -> list[tuple[str, str, str]]:
    """Events exactly as they came over the wire."""
    return [(e.event, e.id, e.data) for e in events]


async def test_a_feed_resumes_after_the_last_event_id_with_no_gap_and_no_duplicate(
    fake: FakeOpenAI, client: httpx.AsyncClient
) -> None:
    threads = Threads(client)
    mark = marker()
    answer = words(60)
    fake.script({"match": mark, "text": answer, "tokens_per_second": 60})
    thread_id = await threads.create()

    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        _, reply_id = await threads.send(thread_id, f"{mark} talk")
        first = await read_until(stream, count_deltas(reply_id, 5))
    await anyio.sleep(0.2)  # the reply goes on streaming while nobody listens
    async with feed(client, thread_id, last_event_id=first[-1].id) as stream:
        rest = await read_until(stream, ended(reply_id))
    # Everything after the first event (the user's message), once more, with ?since=.
    async with feed(client, thread_id, since=first[0].id) as stream:
        whole = await read_until(stream, ended(reply_id))
    async with feed(client, thread_id, last_event_id=whole[-1].id) as stream:
        await stream.quiet(0.3)

    assert wire(first[1:]) + wire(rest) == wire(whole)
    assert rest[0].event == "delta"
    assert streamed(first + rest, reply_id) == answer
    assert whole[-1].json["status"] == "complete"


@pytest.mark.parametrize(
    ("sig", "exit_code", "error"),
    [
        (
            signal.SIGTERM,
            0,
            {"code": "server_stopped", "message": "The server stopped during the reply."},
        ),
        (
            signal.SIGKILL,
            -signal.SIGKILL,
            {"code": "server_restarted", "message": "The server stopped during this reply."},
        ),
    ],
    ids=["sigterm", "sigkill"],
)
async def test_a_feed_resumes_across_a_restart_that_interrupted_the_reply(
    fake: FakeOpenAI,
    start_agent_server: StartAgentServer,
    sig: int,
    exit_code: int,
    error: dict[str, str],
) -> None:
    mark = marker()
    answer = words(200)
    first_question, second_question = f"{mark} talk for long", f"{mark} and then"
    fake.script(
        {"match": first_question, "text": answer, "tokens_per_second": 20},
        {"match": second_question, "text": "Second answer."},
    )
    # No drain: SIGTERM interrupts the reply at once (tests/test_crash_recovery.py drains).
    server = start_agent_server(fake.api_base, "--drain-s", "0")
    async with server.client() as client:
        threads = Threads(client)
        thread_id = await threads.create()
        async with feed(client, thread_id) as stream:
            await snapshot(stream)
            _, reply_id = await threads.send(thread_id, first_question)
            _, waiting_id = await threads.send(thread_id, second_question)
            first = await read_until(stream, count_deltas(reply_id, 3))

        # Stopped while the first reply streams and the second waits for it.
        assert await anyio.to_thread.run_sync(server.stop, sig) == exit_code
        await anyio.to_thread.run_sync(server.start)

        async with feed(client, thread_id, last_event_id=first[-1].id) as stream:
            rest = await read_until(stream, ended(waiting_id))
            await stream.quiet(0.3)
        async with feed(client, thread_id, since=first[0].id) as stream:
            whole = await read_until(stream, ended(waiting_id))
        saved = (await threads.get(thread_id))["messages"]

    assert wire(first[1:]) + wire(rest) == wire(whole)
    (stopped,) = [row for row in message_rows(rest, reply_id) if row["status"] in FINAL]
    text = streamed(first + rest, reply_id)
    assert (stopped["status"], stopped["error"], stopped["text"]) == ("interrupted", error, text)
    assert len(text.split()) >= 3
    assert answer.startswith(text)
    assert saved[1] == stopped
    # The waiting reply runs after the restart and sees what the interrupted one said.
    assert (saved[3]["status"], saved[3]["text"]) == ("complete", "Second answer.")
    assert [body["messages"][1:] for body in chat_bodies(fake, mark)] == [
        [{"role": "user", "content": first_question}],
        [
            {"role": "user", "content": first_question},
            {"role": "assistant", "content": text},
            {"role": "user", "content": second_question},
        ],
    ]


async def test_a_client_joining_mid_reply_gets_the_text_so_far_then_the_rest(
    fake: FakeOpenAI, client: httpx.AsyncClient
) -> None:
    threads = Threads(client)
    mark = marker()
    answer = words(60)
    fake.script({"match": mark, "text": answer, "tokens_per_second": 60})
    thread_id = await threads.create()

    async with feed(client, thread_id) as early:
        await snapshot(early)
        user_id, reply_id = await threads.send(thread_id, f"{mark} talk")
        seen_early = await read_until(early, count_deltas(reply_id, 5))
        async with feed(client, thread_id) as late:
            rows, ready = await snapshot(late)
            seen_late = await read_until(late, ended(reply_id))
        seen_early += await read_until(early, ended(reply_id))

    assert [(row.event, row.json["id"]) for row in rows] == [
        ("message", user_id),
        ("message", reply_id),
    ]
    so_far = rows[1].json
    cursor = int(ready.id)
    assert so_far["status"] == "streaming"
    assert so_far["text"] == streamed([e for e in seen_early if int(e.id) <= cursor], reply_id)
    assert wire(seen_late) == wire([e for e in seen_early if int(e.id) > cursor])
    assert so_far["text"] + streamed(seen_late, reply_id) == answer


async def test_the_cursor_of_an_empty_database_resumes_too(
    fake: FakeOpenAI, start_agent_server: StartAgentServer
) -> None:
    # On a new database the first `ready` carries cursor 0; reconnecting with it must give
    # the events after it, like any other cursor, not a second snapshot.
    mark = marker()
    fake.script({"match": mark, "text": "Short answer."})
    server = start_agent_server(fake.api_base)
    async with server.client() as client:
        threads = Threads(client)
        thread_id = await threads.create()
        async with feed(client, thread_id) as stream:
            _, ready = await snapshot(stream)
            _, reply_id = await threads.send(thread_id, f"{mark} hello")
            live = await read_until(stream, ended(reply_id))
        async with feed(client, thread_id, last_event_id=ready.id) as stream:
            resumed = await read_until(stream, ended(reply_id))

    assert ready.id == "0"
    assert wire(resumed) == wire(live)
