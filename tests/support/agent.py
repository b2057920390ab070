"""Agent threads from a client's side: servers wired to a fake OpenAI, thread calls, the feed.

A test scripts the FakeOpenAI with plans that `match` a marker it puts in its own user messages,
so a reply of another test still running on a shared server never takes its plans.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx

from tests.support.server import TEST_APP, ServerProcess, running_server
from tests.support.sse import Event, Watch, watch
from voicestack.testing.fake_openai import FakeOpenAI

FINAL = ("complete", "failed", "interrupted")
INSTRUCTIONS = "You are a helpful assistant."
NO_USAGE = {
    "promptTokens": 0,
    "completionTokens": 0,
    "toolCalls": 0,
    "wallMs": 0,
    "audioInSeconds": 0.0,
    "speechChars": 0,
    "speechSeconds": 0.0,
    "unreportedSteps": 0,
    "costUsd": None,
}

# The `start_agent_server` and `shared_agent_server` fixtures: (api_base, *extra_args) -> server.
StartAgentServer = Callable[..., ServerProcess]

# Only the test tools, and never a provider from the developer's own environment.
AGENT_ENV: dict[str, str | None] = {
    "VOICESTACK_LOAD_TOOLS": "testtools",
    "OPENAI_API_KEY": None,
    "OPENAI_BASE_URL": None,
}


def agent_args(api_base: str | None, *extra: str) -> list[str]:
    """`serve` flags for a server whose replies come from `api_base` (None: no provider)."""
    provider = ["--openai-base-url", api_base] if api_base else []
    return [*provider, "--flush-ms", "20", "--provider-retries", "2", *extra]


@contextmanager
def running_agent_server(
    workdir: Path,
    api_base: str | None,
    *extra_args: str,
    env: Mapping[str, str | None] | None = None,
) -> Iterator[ServerProcess]:
    """A running test-app server for the `with` block, its replies coming from `api_base`, with
    `agent_args(api_base, *extra_args)` on its command line and AGENT_ENV (and `env`) in its
    environment."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = agent_args(api_base, *extra_args)
    with running_server(workdir, TEST_APP, args, {**AGENT_ENV, **(env or {})}) as server:
        yield server


def marker() -> str:
    """A word no other test's message contains, for plans to `match`."""
    return f"m{secrets.token_hex(5)}"


def words(count: int, prefix: str = "w") -> str:
    """`count` distinct words separated by spaces, with no sentence end: `w0 w1 w2 ...`."""
    return " ".join(f"{prefix}{i}" for i in range(count))


def chat_bodies(fake: FakeOpenAI, mark: str) -> list[dict[str, Any]]:
    """The chat requests the fake received whose messages mention `mark`, oldest first."""
    return [
        request["body"]
        for request in fake.requests("chat")
        if any(mark in str(m.get("content")) for m in request["body"]["messages"])
    ]


class Threads:
    """The thread routes of one server, asserting the status and shape of every answer."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def create(self, title: str | None = None) -> str:
        """POST /api/threads; returns the new thread's id."""
        response = await self.client.post("/api/threads", json={"title": title} if title else {})
        assert response.status_code == 201, response.text
        body = response.json()
        assert list(body) == ["id"], body
        return body["id"]

    async def send(self, thread_id: str, text: str) -> tuple[str, str]:
        """POST /api/threads/{id}/messages; returns (messageId, replyId)."""
        response = await self.client.post(f"/api/threads/{thread_id}/messages", json={"text": text})
        assert response.status_code == 201, response.text
        body = response.json()
        assert sorted(body) == ["messageId", "replyId"], body
        return body["messageId"], body["replyId"]

    async def get(self, thread_id: str) -> dict[str, Any]:
        """GET /api/threads/{id}: the thread with usage, messages and tool calls."""
        response = await self.client.get(f"/api/threads/{thread_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def cancel(self, thread_id: str) -> dict[str, Any]:
        """POST /api/threads/{id}/cancel."""
        response = await self.client.post(f"/api/threads/{thread_id}/cancel")
        assert response.status_code == 200, response.text
        return response.json()

    async def mutation(self, name: str, args: dict[str, Any]) -> Any:
        """POST /api/mutation/{name}; returns its value."""
        response = await self.client.post(f"/api/mutation/{name}", json={"args": args})
        assert response.status_code == 200, response.text
        return response.json()["value"]


@asynccontextmanager
async def feed(
    client: httpx.AsyncClient,
    thread_id: str,
    *,
    last_event_id: str | None = None,
    since: str | None = None,
) -> AsyncIterator[Watch]:
    """The thread's event feed, from a snapshot or resumed after `last_event_id` / `since`."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else None
    params = {"since": since} if since is not None else None
    async with watch(
        client, f"/api/threads/{thread_id}/events", headers=headers, params=params
    ) as stream:
        yield stream


async def snapshot(stream: Watch) -> tuple[list[Event], Event]:
    """A fresh feed's snapshot events (which carry no id) and the `ready` event that ends it."""
    events = []
    while True:
        event = await stream.next()
        if event.event == "ready":
            assert event.json == {"cursor": int(event.id)}, event
            return events, event
        assert event.id == "", f"a snapshot event carries an id: {event}"
        events.append(event)


async def read_until(
    stream: Watch, done: Callable[[Event], bool], timeout: float = 10.0
) -> list[Event]:
    """Every event up to and including the first for which `done` is true, within `timeout`."""
    events = []
    with anyio.fail_after(timeout):
        while True:
            event = await stream.next(timeout)
            events.append(event)
            if done(event):
                return events


async def drain(stream: Watch, seconds: float) -> list[Event]:
    """Every event that arrives within `seconds`."""
    events: list[Event] = []
    with anyio.move_on_after(seconds):
        while True:
            events.append(await stream.next(timeout=seconds + 1))
    return events


def ended(message_id: str) -> Callable[[Event], bool]:
    """True for the `message` event that gives `message_id` a final status."""

    def check(event: Event) -> bool:
        return (
            event.event == "message"
            and event.json["id"] == message_id
            and event.json["status"] in FINAL
        )

    return check


async def ask(
    client: httpx.AsyncClient, threads: Threads, text: str, timeout: float = 10.0
) -> tuple[str, str, str, list[Event]]:
    """Send `text` in a new thread and follow its feed to the reply's end, within `timeout`.

    Returns (thread id, user message id, reply id, the live events).
    """
    thread_id = await threads.create()
    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        user_id, reply_id = await threads.send(thread_id, text)
        events = await read_until(stream, ended(reply_id), timeout)
    return thread_id, user_id, reply_id, events


def count_deltas(message_id: str, count: int) -> Callable[[Event], bool]:
    """True once `count` deltas of `message_id` have gone by."""
    seen = 0

    def check(event: Event) -> bool:
        nonlocal seen
        if event.event == "delta" and event.json["messageId"] == message_id:
            seen += 1
        return seen >= count

    return check


def deltas(events: Sequence[Event], message_id: str) -> list[dict[str, Any]]:
    """The `delta` data of `message_id`, in feed order."""
    return [e.json for e in events if e.event == "delta" and e.json["messageId"] == message_id]


def streamed(events: Sequence[Event], message_id: str) -> str:
    """The text the feed streamed for `message_id`."""
    return "".join(d["text"] for d in deltas(events, message_id))


def message_rows(events: Sequence[Event], message_id: str) -> list[dict[str, Any]]:
    """The `message` rows of `message_id`, in feed order."""
    return [e.json for e in events if e.event == "message" and e.json["id"] == message_id]


def tool_call_rows(events: Sequence[Event]) -> list[dict[str, Any]]:
    """Every `tool_call` row, in feed order."""
    return [e.json for e in events if e.event == "tool_call"]


def outline(events: Sequence[Event]) -> list[tuple[str, str, str | None]]:
    """Each event as (kind, row id, status): deltas as ("delta", messageId, None)."""
    shape: list[tuple[str, str, str | None]] = []
    for event in events:
        data = event.json
        if event.event == "delta":
            shape.append(("delta", data["messageId"], None))
        else:
            shape.append((event.event, data["id"], data.get("status")))
    return shape


def assert_live_ids(events: Sequence[Event]) -> None:
    """Every live event carries an id, and the ids increase."""
    ids = [int(e.id) for e in events]
    assert ids == sorted(set(ids)), ids
