"""Assistant replies end to end: a real server streams a fake model's answer into the thread feed.

The tests share a server wired to the FakeOpenAI (with the feed-resuming tests); every test
works in threads of its own and scripts plans that match a marker in its own messages.
"""

from __future__ import annotations

import asyncio
import json
import time

import anyio
import httpx
import pytest

from tests.support.agent import (
    INSTRUCTIONS,
    NO_USAGE,
    Threads,
    ask,
    assert_live_ids,
    chat_bodies,
    count_deltas,
    deltas,
    drain,
    ended,
    feed,
    marker,
    message_rows,
    outline,
    read_until,
    snapshot,
    streamed,
    words,
)
from tests.support.server import ServerProcess
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, pytest.mark.agent_server()]


def user_row(
    message_id: str,
    thread_id: str,
    text: str,
    order: int,
    stamp: float,
    author: str,
    author_name: str = "admin",
) -> dict:
    """A user message of user `author` (named `author_name`) as the API shows it."""
    return {
        "id": message_id,
        "threadId": thread_id,
        "role": "user",
        "text": text,
        "status": "complete",
        "error": None,
        "createdAt": stamp,
        "updatedAt": stamp,
        "order": order,
        "author": author,
        "authorName": author_name,
        "agent": None,
        "replyTo": None,
        "audioFileId": None,
        "usage": NO_USAGE,
        "voice": None,
    }


async def test_a_reply_streams_into_the_feed_and_is_saved_with_its_usage(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads, server: ServerProcess
) -> None:
    admin = server.user_id()
    mark = marker()
    first, second = f"{mark} first question", f"{mark} second question"
    answer = "Hello there. This reply streams into the thread, a few words at a time."
    fake.script(
        {
            "match": first,
            "text": answer,
            "tokens_per_second": 200,
            "usage": {"prompt_tokens": 123, "completion_tokens": 45},
        },
        {"match": second, "text": "Fine.", "usage": {"prompt_tokens": 7, "completion_tokens": 2}},
    )
    thread_id = await threads.create()

    async with feed(client, thread_id) as stream:
        rows, _ready = await snapshot(stream)
        user_id, reply_id = await threads.send(thread_id, first)
        events = await read_until(stream, ended(reply_id))
        user2_id, reply2_id = await threads.send(thread_id, second)
        events2 = await read_until(stream, ended(reply2_id))

    assert rows == []
    assert_live_ids(events + events2)
    pieces = deltas(events, reply_id)
    assert outline(events) == [
        ("message", user_id, "complete"),
        ("message", reply_id, "pending"),
        ("message", reply_id, "streaming"),
        *[("delta", reply_id, None)] * len(pieces),
        ("message", reply_id, "complete"),
    ]
    assert len(pieces) > 1
    assert [p["seq"] for p in pieces] == list(range(1, len(pieces) + 1))
    assert streamed(events, reply_id) == answer
    asked = events[0].json
    assert asked == user_row(user_id, thread_id, first, 1, asked["createdAt"], admin)
    pending, streaming, final = (
        events[1].json,
        events[2].json,
        events[-1].json,
    )
    assert pending == {
        "id": reply_id,
        "threadId": thread_id,
        "role": "assistant",
        "text": "",
        "status": "pending",
        "error": None,
        "createdAt": pending["createdAt"],
        "updatedAt": pending["createdAt"],
        "order": 2,
        "author": None,
        "authorName": None,
        "agent": "assistant",
        "replyTo": user_id,
        "audioFileId": None,
        "usage": NO_USAGE,
        "voice": None,
    }
    assert streaming == {**pending, "status": "streaming", "updatedAt": streaming["updatedAt"]}
    wall_ms = final["usage"]["wallMs"]
    assert wall_ms > 0
    assert final == {
        **pending,
        "text": answer,
        "status": "complete",
        "updatedAt": final["updatedAt"],
        "usage": {**NO_USAGE, "promptTokens": 123, "completionTokens": 45, "wallMs": wall_ms},
    }

    final2 = events2[-1].json
    thread = await threads.get(thread_id)
    assert thread == {
        "id": thread_id,
        "title": None,
        "owner": admin,
        "agent": "assistant",
        "metadata": None,
        "createdAt": thread["createdAt"],
        "updatedAt": thread["updatedAt"],
        "usage": {
            **NO_USAGE,
            "promptTokens": 130,
            "completionTokens": 47,
            "wallMs": wall_ms + final2["usage"]["wallMs"],
            "audioOutSeconds": 0.0,
        },
        "messages": [asked, final, events2[0].json, final2],
        "toolCalls": [],
    }
    assert [m["id"] for m in thread["messages"]] == [user_id, reply_id, user2_id, reply2_id]
    assert thread["createdAt"] <= asked["createdAt"] <= final2["updatedAt"] <= thread["updatedAt"]
    assert final2["text"] == "Fine."
    assert [body["messages"] for body in chat_bodies(fake, mark)] == [
        [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": first}],
        [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": first},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": second},
        ],
    ]

    # A fresh connection gets the thread as a snapshot: rows without ids, then `ready`.
    async with feed(client, thread_id) as stream:
        rows, ready = await snapshot(stream)
    assert [row.json for row in rows] == thread["messages"]
    assert [row.event for row in rows] == ["message"] * 4
    assert int(ready.id) >= int(events2[-1].id)


async def _chunks_until_a_reply_ends(server: ServerProcess, thread_id: str) -> list[bytes]:
    """A plain watcher's feed of the thread, read off its socket, as the HTTP chunks the server
    wrote (one per hub batch when the watcher keeps up), until a reply has completed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"GET /api/threads/{thread_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.token}\r\nAccept-Encoding: identity\r\n\r\n".encode()
    )
    try:
        await reader.readuntil(b"\r\n\r\n")
        chunks: list[bytes] = []
        with anyio.fail_after(20):
            while ("message", "assistant", "complete") not in _chunk_outline(chunks[-1:]):
                size = int(await reader.readuntil(b"\r\n"), 16)
                chunks.append((await reader.readexactly(size + 2))[:-2])
        return chunks
    finally:
        writer.close()


def _chunk_outline(chunks: list[bytes]) -> list[tuple[str, str | None, str | None]]:
    """(event, role, status) of each SSE event in the chunks (None where its data has none)."""
    outline: list[tuple[str, str | None, str | None]] = []
    for event in b"".join(chunks).split(b"\n\n")[:-1]:
        fields = dict(line.split(b": ", 1) for line in event.split(b"\n"))
        data = json.loads(fields[b"data"])
        outline.append((fields[b"event"].decode(), data.get("role"), data.get("status")))
    return outline


@pytest.mark.parametrize(
    ("answer", "pace"),
    [("Fine.", None), ("One sentence first. Then a few more words to end on", 100)],
    ids=["all-at-once", "at-a-pace"],
)
async def test_a_replys_last_piece_and_its_end_reach_a_watcher_in_one_write(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess, answer: str, pace: int | None
) -> None:
    # The text still buffered when the model ends is saved in the commit that ends the reply:
    # a watcher is written to once for both, one fan-out fewer per reply.
    mark = marker()
    fake.script({"match": mark, "text": answer, "tokens_per_second": pace})
    thread_id = await threads.create()
    watching = asyncio.ensure_future(_chunks_until_a_reply_ends(server, thread_id))
    await asyncio.sleep(0.3)  # subscribed, its snapshot sent
    await threads.send(thread_id, f"{mark} hello")
    chunks = await watching

    reply_ends = [("delta", None, None), ("message", "assistant", "complete")]
    if pace is None:
        assert _chunk_outline(chunks[-1:]) == [("message", "assistant", "streaming"), *reply_ends]
    else:  # a timer's piece may share the batch, when the hub was busy as both committed
        assert _chunk_outline(chunks[-1:])[-2:] == reply_ends
        assert [e for e, _, _ in _chunk_outline(chunks)].count("delta") > 1


async def test_two_subscribers_see_the_same_events_in_the_same_order(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    answer = words(60)
    fake.script({"match": mark, "text": answer, "tokens_per_second": 300})
    thread_id = await threads.create()

    async with feed(client, thread_id) as one, feed(client, thread_id) as two:
        await snapshot(one)
        await snapshot(two)
        _, reply_id = await threads.send(thread_id, f"{mark} hello")
        seen_by_one = await read_until(one, ended(reply_id))
        seen_by_two = await read_until(two, ended(reply_id))

    assert [(e.event, e.id, e.data) for e in seen_by_two] == [
        (e.event, e.id, e.data) for e in seen_by_one
    ]
    assert len(deltas(seen_by_one, reply_id)) > 1
    assert streamed(seen_by_one, reply_id) == answer


async def test_streamed_text_is_coalesced_into_word_sized_deltas(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    answer = words(200)  # 200 tokens in one second, no sentence end: only the timer flushes
    fake.script({"match": mark, "text": answer, "tokens_per_second": 200})
    _, _, reply_id, events = await ask(client, threads, f"{mark} count")

    pieces = [d["text"] for d in deltas(events, reply_id)]
    assert "".join(pieces) == answer
    # Neither one commit per token nor one per reply: about one per --flush-ms of 20 ms.
    assert 1 < len(pieces) <= 200 // 3, len(pieces)
    # Cut at word boundaries: every delta but the last ends with the space after a word.
    assert [p[-1] for p in pieces[:-1]] == [" "] * (len(pieces) - 1)


async def test_a_20000_token_reply_loses_no_delta(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    answer = words(20_000)
    fake.script({"match": mark, "text": answer})
    thread_id, _, reply_id, events = await ask(client, threads, f"{mark} talk a lot", 40.0)

    pieces = deltas(events, reply_id)
    assert [p["seq"] for p in pieces] == list(range(1, len(pieces) + 1))
    assert "".join(p["text"] for p in pieces) == answer
    assert (events[-1].json["status"], events[-1].json["text"]) == ("complete", answer)
    saved = (await threads.get(thread_id))["messages"][1]
    assert (saved["status"], saved["text"]) == ("complete", answer)


async def test_cancel_stops_a_streaming_reply_at_once_and_keeps_its_text(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    answer = words(100)
    fake.script({"match": mark, "text": answer, "tokens_per_second": 25})
    thread_id = await threads.create()

    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        _, reply_id = await threads.send(thread_id, f"{mark} talk slowly")
        before = await read_until(stream, count_deltas(reply_id, 3))
        asked = time.monotonic()
        cancelled = await threads.cancel(thread_id)
        after = await read_until(stream, ended(reply_id), timeout=1.0)
        took = time.monotonic() - asked
        later = await drain(stream, 0.6)

    assert cancelled == {"messageId": reply_id}
    assert took < 1.0
    stopped = after[-1].json
    text = streamed(before + after, reply_id)
    assert (stopped["status"], stopped["error"], stopped["text"]) == (
        "interrupted",
        {"code": "cancelled", "message": "The reply was stopped."},
        text,
    )
    assert len(text.split()) >= 3
    assert answer.startswith(text)
    assert text != answer
    # After the interruption nothing streams; at most the runner's own final save of the row.
    unchanged = {k: v for k, v in stopped.items() if k not in ("usage", "updatedAt")}
    assert [
        {k: v for k, v in row.items() if k not in ("usage", "updatedAt")}
        for row in message_rows(later, reply_id)
    ] in ([], [unchanged])
    assert [e.event for e in later] == ["message"] * len(message_rows(later, reply_id))
    saved = (await threads.get(thread_id))["messages"][1]
    assert (saved["status"], saved["text"], saved["error"]) == (
        "interrupted",
        text,
        {"code": "cancelled", "message": "The reply was stopped."},
    )


async def test_messages_sent_at_once_are_answered_one_after_another_in_order(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads
) -> None:
    mark = marker()
    questions = [f"{mark} question {n}" for n in (1, 2, 3)]
    answers = [f"Answer {n}: {words(8)}" for n in (1, 2, 3)]
    fake.script(
        *[
            {"match": q, "text": a, "tokens_per_second": 200}
            for q, a in zip(questions, answers, strict=True)
        ]
    )
    thread_id = await threads.create()

    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        sent = [await threads.send(thread_id, q) for q in questions]
        replies = [reply_id for _, reply_id in sent]
        events = await read_until(stream, ended(replies[-1]), timeout=15.0)

    # Each reply streams only after the one before has completed.
    lifecycle: list[tuple[str, str, str | None]] = []
    for step in outline(events):
        if step[1] in replies and step[2] != "pending" and (not lifecycle or lifecycle[-1] != step):
            lifecycle.append(step)
    assert lifecycle == [
        step
        for reply_id in replies
        for step in [
            ("message", reply_id, "streaming"),
            ("delta", reply_id, None),
            ("message", reply_id, "complete"),
        ]
    ]
    assert [streamed(events, r) for r in replies] == answers
    system = {"role": "system", "content": INSTRUCTIONS}
    said = [
        [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        for q, a in zip(questions, answers, strict=True)
    ]
    assert [body["messages"] for body in chat_bodies(fake, mark)] == [
        [system, said[0][0]],
        [system, *said[0], said[1][0]],
        [system, *said[0], *said[1], said[2][0]],
    ]


async def test_a_person_answering_hands_off_the_unfinished_replies(
    fake: FakeOpenAI, client: httpx.AsyncClient, threads: Threads, server: ServerProcess
) -> None:
    mark = marker()
    fake.script({"match": f"{mark} first", "text": words(100), "tokens_per_second": 25})
    thread_id = await threads.create()
    handed_off = {"code": "handed_off", "message": "A person answered instead."}
    person = "A person here: I will take it from now on."

    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        user1, reply1 = await threads.send(thread_id, f"{mark} first")
        user2, reply2 = await threads.send(thread_id, f"{mark} second")  # waits behind reply1
        before = await read_until(stream, count_deltas(reply1, 2))
        posted = await threads.mutation("messages.post", {"threadId": thread_id, "text": person})
        after = await read_until(
            stream, lambda e: e.event == "message" and e.json["id"] == posted["messageId"]
        )
        later = await drain(stream, 0.6)

    assert list(posted) == ["messageId"]
    events = before + after
    assert outline(after)[-3:] == [
        ("message", reply1, "interrupted"),
        ("message", reply2, "interrupted"),
        ("message", posted["messageId"], "complete"),
    ]
    stopped1, stopped2, answer = (e.json for e in after[-3:])
    assert (stopped1["error"], stopped1["text"]) == (handed_off, streamed(events, reply1))
    assert stopped1["text"] != ""
    assert (stopped2["error"], stopped2["text"]) == (handed_off, "")
    assert answer == {
        "id": posted["messageId"],
        "threadId": thread_id,
        "role": "assistant",
        "text": person,
        "status": "complete",
        "error": None,
        "createdAt": answer["createdAt"],
        "updatedAt": answer["createdAt"],
        "order": 5,
        "author": server.user_id(),  # the person who answered
        "authorName": "admin",
        "agent": None,  # a person wrote it
        "replyTo": None,
        "audioFileId": None,
        "usage": NO_USAGE,
        "voice": None,
    }
    assert "delta" not in [e.event for e in later]
    thread = await threads.get(thread_id)
    assert [(m["id"], m["status"]) for m in thread["messages"]] == [
        (user1, "complete"),
        (reply1, "interrupted"),
        (user2, "complete"),
        (reply2, "interrupted"),
        (posted["messageId"], "complete"),
    ]
    assert thread["messages"][1]["text"] == stopped1["text"]
    # The reply that was still waiting never asked the model.
    assert chat_bodies(fake, f"{mark} second") == []
