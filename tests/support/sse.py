"""A watching SSE client: httpx-sse reads the stream in a task, the test takes events with limits.

Reading in a task of its own lets a test wait for the next event, or assert that none arrives,
with a time limit, without ever cancelling the stream's own iterator halfway through an event.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse


@dataclass(frozen=True)
class Event:
    """One SSE event as received: its name, id and raw data, and the data parsed."""

    event: str
    id: str
    data: str

    @property
    def json(self) -> Any:
        """The data parsed as JSON."""
        return json.loads(self.data)


class Watch:
    """An open event stream; `next` takes the next event, `ended` waits for the stream's end."""

    def __init__(self, source: EventSource, receive: MemoryObjectReceiveStream[Event]) -> None:
        self.source = source
        self._receive = receive
        self.error: BaseException | None = None

    @property
    def response(self) -> httpx.Response:
        """The stream's HTTP response (status and headers)."""
        return self.source.response

    async def next(self, timeout: float = 5.0) -> Event:
        """The next event; fails when none arrives within `timeout` or the stream ended."""
        with anyio.move_on_after(timeout):
            try:
                return await self._receive.receive()
            except anyio.EndOfStream:
                raise AssertionError(f"the stream ended (error: {self.error!r})") from None
        raise AssertionError(f"no event arrived within {timeout} s")

    async def quiet(self, seconds: float) -> None:
        """Assert that no event arrives for `seconds`."""
        with anyio.move_on_after(seconds):
            event = await self.next(timeout=seconds + 1)
            raise AssertionError(f"expected no event, got {event}")

    async def ended(self, timeout: float = 5.0) -> None:
        """Wait for the server to end the stream cleanly, with no event left unread."""
        with anyio.fail_after(timeout):
            try:
                event = await self._receive.receive()
            except anyio.EndOfStream:
                assert self.error is None, f"the stream broke instead of ending: {self.error!r}"
                return
        raise AssertionError(f"expected the stream to end, got {event}")

    async def cut(self, timeout: float = 5.0) -> list[Event]:
        """Every event still to come, once the stream has ended within `timeout`, cleanly or
        not (its server died)."""
        events: list[Event] = []
        with anyio.fail_after(timeout):
            while True:
                try:
                    events.append(await self._receive.receive())
                except anyio.EndOfStream:
                    return events

    async def until_end(self, timeout: float = 5.0) -> list[Event]:
        """Every event still to come, once the server has ended the stream cleanly within
        `timeout`."""
        events: list[Event] = []
        with anyio.fail_after(timeout):
            while True:
                try:
                    events.append(await self._receive.receive())
                except anyio.EndOfStream:
                    assert self.error is None, f"the stream broke instead of ending: {self.error!r}"
                    return events

    async def _pump(self, send: MemoryObjectSendStream[Event]) -> None:
        async with send:
            try:
                async for sse in self.source.aiter_sse():
                    if not _is_keepalive(sse):
                        await send.send(Event(sse.event, sse.id, sse.data))
            except httpx.HTTPError as exc:
                self.error = exc


def _is_keepalive(sse: ServerSentEvent) -> bool:
    # A `: ping` comment after an event reaches httpx-sse as a nameless, empty event.
    return sse.event == "message" and sse.data == ""


@asynccontextmanager
async def watch(
    client: httpx.AsyncClient,
    path: str,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Watch]:
    """Open `GET path` as an event stream (200 asserted) and read it in the background.

    The client's own timeout bounds the connection; `Watch` methods bound every wait after it.
    """
    async with aconnect_sse(
        client, "GET", path, params=params or {}, headers=dict(headers or {})
    ) as source:
        assert source.response.status_code == 200, (path, source.response.status_code)
        assert source.response.headers["content-type"] == "text/event-stream; charset=utf-8"
        send, receive = anyio.create_memory_object_stream[Event](max_buffer_size=10_000)
        stream = Watch(source, receive)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(stream._pump, send)
                yield stream
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The reader task is only ever cancelled, so a failure is the test's own: show it bare.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            send.close()
            receive.close()
