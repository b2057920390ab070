"""Crash recovery: a SIGKILL in the middle of 50 streaming replies loses no committed row, and a
SIGTERM drains replies for `--drain-s`, leaves pending ones pending, and hangs no SSE client.

(tests/test_agent_resume.py covers one reply's resume across a restart; this is the same at scale
from the database file's side, and the drain.)
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import apsw
import pytest

from tests.support.agent import (
    StartAgentServer,
    Threads,
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
from tests.support.sse import watch
from voicestack.store.store import integrity_check
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

REPLIES = 50
ANSWER = words(200)  # 10 s at 20 tokens/s: still streaming when the server is stopped


class DbRows:
    """The rows that matter, read straight from the SQLite file in one read transaction."""

    def __init__(self, path: Path) -> None:
        # Read-only: closing it never checkpoints, so the file stays as the server left it.
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        conn.set_busy_timeout(5000)
        try:
            conn.execute("BEGIN")
            self.events: dict[int, tuple[Any, ...]] = {
                row[0]: row[1:]
                for row in conn.execute("SELECT id, thread_id, kind, ref, data FROM thread_events")
            }
            self.messages: dict[str, dict[str, Any]] = {
                row[0]: {"status": row[1], "text": row[2], "error": row[3]}
                for row in conn.execute("SELECT id, status, text, error_code FROM messages")
            }
            conn.execute("COMMIT")
            self.integrity = integrity_check(conn)
        finally:
            conn.close()

    def delta_text(self, message_id: str) -> str:
        """The text of the message's committed deltas, in order."""
        return "".join(
            json.loads(data)["text"]
            for _id, (_t, kind, ref, data) in sorted(self.events.items())
            if kind == "delta" and ref == message_id
        )

    def assert_contains(self, earlier: DbRows) -> None:
        """Every event row of `earlier` is here unchanged, and every message row is here."""
        missing = [i for i, row in earlier.events.items() if self.events.get(i) != row]
        assert not missing, f"{len(missing)} committed events lost, e.g. {missing[:5]}"
        assert set(earlier.messages) <= set(self.messages)


async def test_sigkill_mid_stream_loses_no_committed_row_and_feeds_resume(
    fake: FakeOpenAI, start_agent_server: StartAgentServer
) -> None:
    mark = marker()
    fake.script({"match": mark, "text": ANSWER, "tokens_per_second": 20, "times": None})
    server = start_agent_server(fake.api_base)
    async with server.client() as client, anyio.create_task_group() as tg:
        threads = Threads(client)
        thread_ids = [await threads.create() for _ in range(REPLIES)]
        replies: dict[str, str] = {}
        seen: dict[str, list] = {}

        async def follow(thread_id: str) -> None:
            async with feed(client, thread_id) as stream:
                await snapshot(stream)
                _, reply_id = await threads.send(thread_id, f"{mark} talk")
                replies[thread_id] = reply_id
                seen[thread_id] = await read_until(stream, count_deltas(reply_id, 3))

        for thread_id in thread_ids:
            tg.start_soon(follow, thread_id)
    # Every reply streams and has committed deltas; the server is still writing more.
    before = DbRows(server.db_path)
    assert [before.messages[r]["status"] for r in replies.values()] == ["streaming"] * REPLIES
    assert await anyio.to_thread.run_sync(server.stop, signal.SIGKILL) == -signal.SIGKILL

    killed = DbRows(server.db_path)
    assert killed.integrity == ["ok"]
    killed.assert_contains(before)
    await anyio.to_thread.run_sync(server.start)
    async with server.client() as client:
        resumed = {}
        for thread_id, reply_id in replies.items():
            last_id = seen[thread_id][-1].id
            async with feed(client, thread_id, last_event_id=last_id) as stream:
                resumed[thread_id] = await read_until(stream, ended(reply_id))
    after = DbRows(server.db_path)

    assert after.integrity == ["ok"]
    after.assert_contains(killed)
    for thread_id, reply_id in replies.items():
        row = after.messages[reply_id]
        text = after.delta_text(reply_id)
        assert (row["status"], row["error"]) == ("interrupted", "server_restarted")
        assert row["text"] == text == killed.delta_text(reply_id)
        assert len(text.split()) >= 3
        assert ANSWER.startswith(text)
        # The reconnecting client gets what it missed, then the interrupted message.
        events = seen[thread_id] + resumed[thread_id]
        (final,) = message_rows(resumed[thread_id], reply_id)
        assert (final["status"], final["text"]) == ("interrupted", text)
        assert streamed(events, reply_id) == text


@pytest.mark.parametrize(
    ("drain_s", "answer", "status"),
    [(10.0, words(40), "complete"), (1.0, ANSWER, "interrupted")],
    ids=["replies-finish", "drain-ends-first"],
)
async def test_sigterm_drains_replies_then_exits_0_and_ends_every_stream(
    fake: FakeOpenAI,
    start_agent_server: StartAgentServer,
    drain_s: float,
    answer: str,
    status: str,
) -> None:
    mark = marker()
    fake.script(
        {"match": f"{mark} talk", "text": answer, "tokens_per_second": 20, "times": None},
        {"match": f"{mark} then", "text": "Second answer.", "times": None},
    )
    count = 10
    server = start_agent_server(fake.api_base, "--drain-s", str(drain_s))
    replies: dict[str, tuple[str, str]] = {}
    finals: dict[str, dict[str, Any]] = {}
    async with server.client() as client:
        threads = Threads(client)
        async with watch(client, "/api/watch/items.list") as watcher:
            await watcher.next()
            async with anyio.create_task_group() as tg:
                ready = anyio.Event()
                signalled = anyio.Event()

                async def follow(thread_id: str) -> None:
                    async with feed(client, thread_id) as stream:
                        await snapshot(stream)
                        _, reply_id = await threads.send(thread_id, f"{mark} talk")
                        _, waiting_id = await threads.send(thread_id, f"{mark} then")
                        replies[thread_id] = (reply_id, waiting_id)
                        first = await read_until(stream, count_deltas(reply_id, 3))
                        if len(replies) == count:
                            ready.set()
                        await signalled.wait()
                        rest = await read_until(stream, ended(reply_id), timeout=drain_s + 5)
                        await stream.ended(timeout=3.0)  # the feed ends after the final event
                        (final,) = message_rows(rest, reply_id)
                        finals[reply_id] = {**final, "streamed": streamed(first + rest, reply_id)}

                for _ in range(count):
                    tg.start_soon(follow, await threads.create())
                with anyio.fail_after(10):
                    await ready.wait()
                started = time.monotonic()
                exit_code: list[int] = []

                async def stop() -> None:
                    exit_code.append(await anyio.to_thread.run_sync(server.stop, signal.SIGTERM))

                tg.start_soon(stop)
                signalled.set()
                await watcher.ended(timeout=1.5)  # query watches end at once
                watch_ended = time.monotonic() - started
        elapsed = time.monotonic() - started
        stopped = DbRows(server.db_path)

        assert exit_code == [0]
        assert watch_ended < 1.5
        # Out within the drain (or the replies' own 2 s, when they finish first) + a few s.
        assert elapsed < min(drain_s, len(answer.split()) / 20) + 3.0
        assert stopped.integrity == ["ok"]
        for reply_id, waiting_id in replies.values():
            row = stopped.messages[reply_id]
            final = finals[reply_id]
            assert (row["status"], final["status"]) == (status, status)
            assert row["text"] == final["text"] == final["streamed"]
            assert row["text"] == stopped.delta_text(reply_id)
            if status == "complete":
                assert row["text"] == answer
            else:
                assert row["error"] == "server_stopped"
                assert 3 <= len(row["text"].split()) < 200
                assert answer.startswith(row["text"])
            # A reply still waiting when the signal came stays pending for the next start.
            assert stopped.messages[waiting_id]["status"] == "pending"

        await anyio.to_thread.run_sync(server.start)
        with anyio.fail_after(10):
            for thread_id, (_reply_id, waiting_id) in replies.items():
                while (await threads.get(thread_id))["messages"][3]["status"] != "complete":
                    await anyio.sleep(0.05)
                assert (await threads.get(thread_id))["messages"][3]["id"] == waiting_id
