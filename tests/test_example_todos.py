"""The example app as its docstring shows it: watch `todos.list` with a raw stream, add a to-do."""

from __future__ import annotations

import anyio
import pytest

pytestmark = pytest.mark.anyio


async def read_event(chunks, buffer: bytearray) -> bytes:
    """The next whole SSE event (up to its blank line) from a raw byte stream."""
    with anyio.fail_after(5):
        while b"\n\n" not in buffer:
            buffer += await anext(chunks)
    end = buffer.index(b"\n\n") + 2
    event = bytes(buffer[:end])
    del buffer[:end]
    return event


async def test_watch_the_todo_list_and_add_a_todo(start_server):
    server = start_server("voicestack.examples.todos")
    async with (
        server.client() as client,
        client.stream("GET", "/api/watch/todos.list") as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["cache-control"] == "no-store"
        chunks = stream.aiter_raw()
        buffer = bytearray()
        first = await read_event(chunks, buffer)

        added = await client.post("/api/mutation/todos.add", json={"args": {"text": "milk"}})
        second = await read_event(chunks, buffer)

    # Commit 1 is serve's own: it made the first admin token on the empty database.
    assert first == b'id: 1\nevent: value\ndata: {"value":[],"version":1}\n\n'
    assert added.json() == {"value": {"id": 1}, "version": 2}
    assert second == (
        b"id: 2\nevent: value\n"
        b'data: {"value":[{"id":1,"text":"milk","done":false}],"version":2}\n\n'
    )
    assert buffer == b""
