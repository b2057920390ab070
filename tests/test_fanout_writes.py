"""A frame written to hundreds of feed connections at once (from several threads) reaches every
one whole and in order, also where the socket or its transport could not take it at once."""

from __future__ import annotations

import asyncio
import os
import socket

import anyio
import pytest
from uvicorn.protocols.http.flow_control import FlowControl

from voicestack.reactive import fanout_writes
from voicestack.reactive.channel import FeedChannel
from voicestack.reactive.fanout_writes import PARALLEL_FROM, write_frame

pytestmark = pytest.mark.anyio
COUNT = PARALLEL_FROM + 44


class Held(asyncio.Protocol):
    """The server's side of one connection: its transport, nothing read."""

    def __init__(self, made: list[asyncio.Transport]) -> None:
        self.made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.made.append(transport)


async def _outboxes(count: int) -> tuple[list[FeedChannel], list[socket.socket], asyncio.Server]:
    loop = asyncio.get_running_loop()
    made: list[asyncio.Transport] = []
    server = await loop.create_server(lambda: Held(made), "127.0.0.1", 0, backlog=count + 8)
    port = server.sockets[0].getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    with anyio.fail_after(10):
        while len(made) < count:
            await asyncio.sleep(0.01)
    order = {t.get_extra_info("peername"): t for t in made}
    outboxes = []
    for client in clients:
        transport = order[client.getsockname()]
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
        got += client.recv(size - len(got))
    return got


async def test_every_connection_gets_every_frame_whole_and_in_order() -> None:
    assert fanout_writes.HELPERS or os.cpu_count() == 1
    outboxes, clients, server = await _outboxes(COUNT)
    try:
        now = asyncio.get_running_loop().time()
        # One socket already full: the raw write takes nothing and its transport keeps the
        # frame. One transport holding bytes: that connection is written through it, after them.
        full, buffered = clients[3], clients[7]
        full_fd = outboxes[3].raw_socket()
        stuffed = _fill(full_fd)
        outboxes[7].put_frame(b"b" * 4_000_000, now)  # more than its socket takes at once
        assert outboxes[7].raw_socket() == -1

        frames = [bytes([65 + k]) * (1000 + 7919 * k) for k in range(3)]
        for frame in frames:
            write_frame(outboxes, frame, now)
        expected = b"".join(frames)

        for k, client in enumerate(clients):
            prefix = b"f" * stuffed if client is full else b""
            prefix = b"b" * 4_000_000 if client is buffered else prefix
            reading = asyncio.to_thread(_read_all, client, len(prefix) + len(expected))
            assert await reading == prefix + expected, k
    finally:
        for client in clients:
            client.close()
        server.close()
