"""A batch written to hundreds of feed connections at once (from several threads) reaches every
one whole and in order, also where the socket or its transport could not take it at once, on
the standard event loop and on uvloop (the server's)."""

from __future__ import annotations

import asyncio
import os
import socket

import anyio
import pytest
from uvicorn.protocols.http.flow_control import FlowControl

from voicestack.agent.feed import send_plain
from voicestack.reactive import fanout_writes
from voicestack.reactive.channel import FeedChannel
from voicestack.reactive.fanout_writes import PARALLEL_FROM
from voicestack.reactive.wire import encode_event, http_chunk

pytestmark = pytest.mark.anyio
COUNT = PARALLEL_FROM + 44


@pytest.fixture(
    params=[("asyncio", {}), ("asyncio", {"use_uvloop": True})], ids=["asyncio", "uvloop"]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """Both event loops."""
    return request.param  # type: ignore[no-any-return]


class Held(asyncio.Protocol):
    """The server's side of one connection: its transport, nothing read."""

    def __init__(self, made: list[asyncio.Transport]) -> None:
        self.made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)  # type: ignore[arg-type]  # uvloop's are not subclasses


def _connect_all(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


async def _outboxes(count: int) -> tuple[list[FeedChannel], list[socket.socket], asyncio.Server]:
    loop = asyncio.get_running_loop()
    made: list[asyncio.Transport] = []
    server = await loop.create_server(lambda: Held(made), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = await asyncio.to_thread(_connect_all, port, count)  # the loop goes on accepting
    with anyio.fail_after(10):
        while len(made) < count:
            await asyncio.sleep(0.01)
    by_peer = {t.get_extra_info("peername"): t for t in made}
    outboxes = []
    for client in clients:
        transport = by_peer[client.getsockname()]
        outbox = FeedChannel()
        outbox.attach(transport, FlowControl(transport))
        outbox.detach()
        outboxes.append(outbox)
    return outboxes, clients, server


def _fill(fd: int) -> int:
    """Write to a non-blocking socket until it takes nothing more; how much it took."""
    stuffed = 0
    while True:
        try:
            stuffed += os.write(fd, b"f" * 65536)
        except BlockingIOError:
            return stuffed


def _read_all(client: socket.socket, size: int) -> bytes:
    client.settimeout(10)
    got = b""
    while len(got) < size:
        more = client.recv(size - len(got))
        assert more, f"the connection ended after {len(got)} of {size} bytes"
        got += more
    return got


async def test_every_connection_gets_every_batch_whole_and_in_order() -> None:
    assert fanout_writes.HELPERS or os.cpu_count() == 1
    outboxes, clients, server = await _outboxes(COUNT)
    try:
        now = asyncio.get_running_loop().time()
        # One socket already full: the raw write takes nothing and its transport keeps the
        # batch. One transport holding bytes: that connection is written through it, after them.
        full, buffered = clients[3], clients[7]
        stuffed = _fill(outboxes[3].raw_socket())
        outboxes[7].put_frame(b"b" * 4_000_000, now)  # more than its socket takes at once
        assert outboxes[7].raw_socket() == -1

        batches = [
            [
                (k * 10 + i, encode_event(b"delta", k * 10 + i, b"x" * (500 + 3001 * k)))
                for i in (1, 2)
            ]
            for k in range(3)
        ]
        for events in batches:
            send_plain(set(outboxes), events, now)
        expected = b"".join(http_chunk(b"".join(e for _, e in events)) for events in batches)

        assert {outbox.cursor for outbox in outboxes} == {22}
        for k, client in enumerate(clients):
            prefix = b"f" * stuffed if client is full else b""
            prefix = b"b" * 4_000_000 if client is buffered else prefix
            reading = asyncio.to_thread(_read_all, client, len(prefix) + len(expected))
            assert await reading == prefix + expected, k
    finally:
        for client in clients:
            client.close()
        server.close()
