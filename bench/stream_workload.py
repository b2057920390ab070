"""The workload of `bench/stream.py`: the reply text, threads, feeds, messages, the provider log."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from typing import Any

from bench.server_access import auth_line
from bench.sse_client import SseClient, Tracker, http_call, wait_ready
from voicestack import jsoncodec
from voicestack.testing.fake_openai.chat import last_user_text

HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
HTTP_CONCURRENCY = 32
USER_TEXT = "bench thread {index}"

_VOCABULARY = (
    "the a of to and in is it that for on with as was at by this be from or have an are not "
    "stream reply token agent voice server thread message commit latency writer reader feed "
    "subscriber delta model answer question quickly slowly database network browser client "
    "because however although therefore meanwhile afterwards everything something nothing"
)
_WORDS = _VOCABULARY.split()


def reply_text(tokens: int, seed: int = 7) -> str:
    """A deterministic English-like reply of `tokens` words, a sentence every 12-20 words."""
    rng = random.Random(seed)
    words: list[str] = []
    sentence = 0
    length = rng.randint(12, 20)
    for index in range(tokens):
        word = rng.choice(_WORDS)
        if sentence == 0:
            word = word.capitalize()
        sentence += 1
        if sentence == length or index == tokens - 1:
            word += "."
            sentence, length = 0, rng.randint(12, 20)
        words.append(word)
    return " ".join(words)


def done_pattern(text: str) -> bytes:
    """Bytes only the reply's final `message` event holds: the text's end, then status complete."""
    return jsoncodec.dumps(text[-24:])[1:-1] + b'","status":"complete"'


def feed_request(port: int, token: str | None, thread_id: str) -> bytes:
    """The raw HTTP request of one feed subscriber, with the server's token."""
    return (
        f"GET /api/threads/{thread_id}/events HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"{auth_line(token)}Accept: text/event-stream\r\nCache-Control: no-store\r\n\r\n"
    ).encode()


async def post_json(
    port: int, path: str, body: Any, expect: int = 201, token: str | None = None
) -> Any:
    """POST `body` as JSON (with `token`, if any); the parsed answer, which must be `expect`."""
    status, raw = await http_call(port, "POST", path, json.dumps(body).encode(), token)
    if status != expect:
        raise RuntimeError(f"POST {path} answered {status}: {raw[:300]!r}")
    return json.loads(raw)


async def bounded(coros: Sequence[Any], limit: int) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def create_threads(port: int, token: str | None, count: int) -> list[str]:
    """Create `count` threads; return their ids in order."""
    created = await bounded(
        [
            post_json(port, "/api/threads", {"title": f"bench {i}"}, token=token)
            for i in range(count)
        ],
        HTTP_CONCURRENCY,
    )
    return [c["id"] for c in created]


async def connect_feeds(
    port: int,
    token: str | None,
    thread_ids: Sequence[str],
    per_thread: int,
    batch: int,
    tracker: Tracker,
) -> dict[str, list[SseClient]]:
    """Open `per_thread` feeds on every thread and wait for each one's `ready` event."""
    loop = asyncio.get_running_loop()
    feeds: dict[str, list[SseClient]] = {t: [] for t in thread_ids}
    wanted = [t for t in thread_ids for _ in range(per_thread)]
    for first in range(0, len(wanted), batch):
        chunk = wanted[first : first + batch]
        fresh = [SseClient(feed_request(port, token, t), tracker) for t in chunk]
        tracker.expect(fresh, b"event: ready")
        opened = await asyncio.gather(
            *(
                asyncio.wait_for(loop.create_connection(lambda c=c: c, HOST, port), 30)
                for c in fresh
            ),
            return_exceptions=True,
        )
        for client, outcome in zip(fresh, opened, strict=True):
            if isinstance(outcome, BaseException):
                client.lost = True
                client.scan()
        for thread_id, client in zip(chunk, fresh, strict=True):
            feeds[thread_id].append(client)
        await wait_ready(tracker, READY_TIMEOUT_S, fresh)
        if tracker.remaining > 0 or tracker.failed:
            raise RuntimeError(
                f"feeds {first}..{first + len(chunk)}: {tracker.remaining} without `ready`, "
                f"{tracker.failed} failed"
            )
    return feeds


async def fetch_request_times(fake_port: int, thread_ids: Sequence[str]) -> dict[str, float]:
    """Thread id -> when the fake provider logged the chat request of its reply."""
    status, raw = await http_call(fake_port, "GET", "/_control/requests?kind=chat")
    if status != 200:
        raise RuntimeError(f"the fake's request log answered {status}")
    index_of = {USER_TEXT.format(index=i): t for i, t in enumerate(thread_ids)}
    times: dict[str, float] = {}
    for request in json.loads(raw):
        thread_id = index_of.get(last_user_text(request["body"].get("messages") or []))
        if thread_id is not None:
            times.setdefault(thread_id, request["timestamp"])
    return times
