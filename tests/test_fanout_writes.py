"""A batch written to hundreds of feed connections at once (from several threads) reaches every
one whole and in order, also where the socket or its transport could not take it at once, on
the standard event loop and on uvloop (the server's); so does a watch's new value."""

from __future__ import annotations

import asyncio
import os
import socket
import zlib
from collections.abc import Callable
from typing import TypeVar

import anyio
import pytest
from uvicorn.protocols.http.flow_control import FlowControl

from voicestack.agent.feed import send_deflated, send_plain
from voicestack.reactive import fanout_writes
from voicestack.reactive.channel import Channel, FeedChannel, Outbox
from voicestack.reactive.deflate import Cohort, opening
from voicestack.reactive.fanout_writes import PARALLEL_FROM
from voicestack.reactive.payloads import Payload
from voicestack.reactive.subscription import SharedQuery, Subscription
from voicestack.reactive.wire import END_OF_CHUNKS, encode_event, http_chunk

pytestmark = pytest.mark.anyio
COUNT = PARALLEL_FROM + 44
OutboxT = TypeVar("OutboxT", bound=Outbox)


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


async def _outboxes(
    count: int, deflate: bool = False
) -> tuple[list[FeedChannel], list[int], list[socket.socket], asyncio.Server]:
    return await _connected(count, lambda _: FeedChannel(deflate=deflate), detach=not deflate)


async def _connected(
    count: int, make: Callable[[int], OutboxT], detach: bool = True
) -> tuple[list[OutboxT], list[int], list[socket.socket], asyncio.Server]:
    """`count` outboxes made by `make(k)`, each attached to a loopback connection."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.Transport] = []
    server = await loop.create_server(lambda: Held(made), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = await asyncio.to_thread(_connect_all, port, count)  # the loop goes on accepting
    with anyio.fail_after(10):
        while len(made) < count:
            await asyncio.sleep(0.01)
    by_peer = {t.get_extra_info("peername"): t for t in made}
    outboxes, fds = [], []
    for k, client in enumerate(clients):
        transport = by_peer[client.getsockname()]
        outbox = make(k)
        outbox.attach(transport, FlowControl(transport))
        if detach:
            outbox.detach()
        outboxes.append(outbox)
        fds.append(transport.get_extra_info("socket").fileno())
    return outboxes, fds, clients, server


def _fill(fd: int) -> int:
    """Write to a non-blocking socket until it takes nothing more; how much it took."""
    stuffed = 0
    while True:
        try:
            stuffed += os.write(fd, b"f" * 65536)
        except BlockingIOError:
            return stuffed


def _batches() -> list[list[tuple[int, bytes]]]:
    """Three batches of two events each, of growing size (ids 1-2, 11-12, 21-22)."""
    return [
        [(k * 10 + i, encode_event(b"delta", k * 10 + i, b"x" * (500 + 3001 * k))) for i in (1, 2)]
        for k in range(3)
    ]


def _unchunked(wire: bytes) -> bytes:
    """The body of a run of HTTP/1.1 chunks."""
    body = b""
    while wire:
        size, rest = wire.split(b"\r\n", 1)
        length = int(size, 16)
        body += rest[:length]
        wire = rest[length + 2 :]
    return body


async def _settled() -> None:
    """Let every outbox's pump task write what it holds and end."""
    for _ in range(5):
        await asyncio.sleep(0)


def _read_to_end(client: socket.socket) -> bytes:
    client.settimeout(10)
    got = b""
    while more := client.recv(65536):
        got += more
    return got


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
    outboxes, fds, clients, server = await _outboxes(COUNT)
    try:
        now = asyncio.get_running_loop().time()
        # One socket already full: the raw write takes nothing and its transport keeps the
        # batch. One transport holding bytes: that connection is written through it, after them.
        full, buffered = clients[3], clients[7]
        stuffed = _fill(fds[3])
        # Its socket full first: how much one takes at once depends on the kernel's tuning.
        kept = _fill(fds[7])
        outboxes[7].put_frame(b"b" * 4_000_000, now)
        assert outboxes[7].claim_socket(None, 0, now) == -1
        assert outboxes[7].cursor == 0

        batches = _batches()
        for events in batches:
            send_plain(set(outboxes), events, now)
        expected = b"".join(http_chunk(b"".join(e for _, e in events)) for events in batches)

        assert {outbox.cursor for outbox in outboxes} == {22}
        for k, client in enumerate(clients):
            prefix = b"f" * stuffed if client is full else b""
            prefix = b"f" * kept + b"b" * 4_000_000 if client is buffered else prefix
            reading = asyncio.to_thread(_read_all, client, len(prefix) + len(expected))
            assert await reading == prefix + expected, k
    finally:
        for client in clients:
            client.close()
        server.close()


async def test_a_busy_subscriber_gets_the_batch_after_its_queue_and_none_gets_an_event_twice() -> (
    None
):
    outboxes, _, clients, server = await _outboxes(COUNT)
    try:
        now = asyncio.get_running_loop().time()
        batches = _batches()
        busy, ahead = {5, COUNT - 1}, {9, COUNT - 2}
        for k in busy:
            outboxes[k].note(b": queued before\n\n")  # its pump has not run yet
        for k in ahead:
            outboxes[k].cursor = 12  # the first two batches reached it already
        for events in batches:
            send_plain(set(outboxes), events, now)
        for outbox in outboxes:
            outbox.close()  # its pump sends what it holds, ends the response and the connection
        chunks = [b"".join(e for _, e in events) for events in batches]
        for k, client in enumerate(clients):
            expected = b"".join(chunks[2:] if k in ahead else chunks)
            expected = (b": queued before\n\n" if k in busy else b"") + expected
            assert _unchunked(await asyncio.to_thread(_read_to_end, client)) == expected, k
    finally:
        for client in clients:
            client.close()
        server.close()


async def test_many_deflated_subscribers_each_decode_every_segment_in_order() -> None:
    outboxes, _, clients, server = await _outboxes(COUNT, deflate=True)
    try:
        cohort = Cohort()
        for outbox in outboxes:
            outbox.open_deflated(opening(b""), 0, cohort)
            outbox.detach()
        await _settled()
        now = asyncio.get_running_loop().time()
        sent = b""
        for events in _batches():
            data = b"".join(e for _, e in events)
            send_deflated(set(outboxes), cohort.segment(data, events[-1][0]), now)
            sent += data
        assert {outbox.cursor for outbox in outboxes} == {22}
        for outbox in outboxes:
            outbox.close()  # the zlib stream's end follows
        for k, client in enumerate(clients):
            decoder = zlib.decompressobj()
            wire = _unchunked(await asyncio.to_thread(_read_to_end, client))
            assert decoder.decompress(wire) == sent, k
            assert decoder.eof, k
    finally:
        for client in clients:
            client.close()
        server.close()


async def test_a_watch_value_reaches_every_one_subscription_stream_once_and_whole() -> None:
    several = 13  # a stream of several subscriptions by id: its outbox sends the value
    channels, fds, clients, server = await _connected(COUNT, lambda k: Channel(k == several))
    try:
        now = asyncio.get_running_loop().time()
        full, buffered, waiting = 3, 7, 11
        stuffed, kept = _fill(fds[full]), _fill(fds[buffered])
        channels[buffered].put_frame(b"b" * 4_000_000, now)
        channels[waiting].push(None, Payload(b'"older"', 1))  # unsent: the new value replaces it
        shared = SharedQuery(None, None, None, ("watch", b"{}", None))  # type: ignore[arg-type]
        shared.subscriptions = {
            Subscription(channel, "s13" if k == several else None, shared)
            for k, channel in enumerate(channels)
        }
        payload = Payload(b'{"n":1}', 2)
        shared.fan_out(payload, now)

        value = encode_event(b"value", 2, b'{"id":"s13","value":{"n":1},"version":2}')
        for k, client in enumerate(clients):
            expected = http_chunk(value) if k == several else payload.single_frame()
            prefix = {full: b"f" * stuffed, buffered: b"f" * kept + b"b" * 4_000_000}.get(k, b"")
            reading = asyncio.to_thread(_read_all, client, len(prefix) + len(expected))
            assert await reading == prefix + expected, k
        for channel in channels:
            channel.close()  # its pump ends the response: nothing else may come before that
        for k, client in enumerate(clients):
            assert await asyncio.to_thread(_read_to_end, client) == END_OF_CHUNKS, k
    finally:
        for client in clients:
            client.close()
        server.close()
