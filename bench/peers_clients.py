"""The subscriber side of `bench/peers.py`: client processes of lean raw-asyncio SSE streams.

Each written text carries a marker `qzNNNNNzq`. While measuring, a stream's `data_received`
stamps the arrival of every marker it has not seen yet, and counts events and bytes; it keeps
no bytes beyond a short carry for markers split between two reads. So a delivery's time is
exactly the arrival of the read that completed its marker, and a client holding thousands of
streams stays cheap. A parent talks to each client process through a pipe:

    client -> ("ready", subscribed, failed)     after every stream is subscribed
    parent -> ("go",)                           start counting CPU and events
    parent -> ("wait", {marker: sent}, timeout) the writes are done: wait for every marker
    client -> ClientResult
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import cast

from bench.sse_client import HOST, HTTP_TIMEOUT_S, http_status, raise_nofile_limit

MARK = re.compile(rb"qz(\d{5})zq")
CARRY = 8  # one byte less than a marker: a marker split between two reads is still found
POOL = 8  # kept-alive connections per client process for PocketBase's subscribe requests
SETTLE_S = 0.5  # after the last marker: let trailing events (a reply's end) arrive


def marker(k: int) -> str:
    """The marker of write number `k`."""
    return f"qz{k:05d}zq"


@dataclass(frozen=True)
class ClientSpec:
    """What one client process subscribes to: `kind` is pocketbase, feed, watch or floor."""

    kind: str
    port: int
    path: str
    token: str
    count: int
    writes: int
    topic: str = ""  # PocketBase's subscription topic
    batch: int = 250
    ready_timeout_s: float = 120.0


@dataclass
class ClientResult:
    """What one client process measured."""

    subscribed: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    missing: int = 0
    events: int = 0
    bytes: int = 0
    last_delivery: float = 0.0
    cpu_s: float = 0.0
    window_s: float = 0.0  # the wall time cpu_s was counted over
    errors: list[str] = field(default_factory=list)


class Group:
    """Counters shared by a client process's streams."""

    def __init__(self, writes: int) -> None:
        self.writes = writes
        self.ready = 0
        self.failed = 0
        self.complete = 0
        self.total = 0
        self.counting = False
        self.ready_changed = asyncio.Event()
        self.all_seen = asyncio.Event()
        self.to_subscribe: asyncio.Queue[Sub] = asyncio.Queue()

    def hit_ready(self, failed: bool = False) -> None:
        """One stream is subscribed (or failed and never will be)."""
        self.ready += 1
        self.failed += failed
        self.ready_changed.set()

    def hit_complete(self) -> None:
        """One stream has seen every write."""
        self.complete += 1
        if self.complete >= self.total:
            self.all_seen.set()


class Sub(asyncio.Protocol):
    """One SSE stream; the only per-read work is counting and looking for new markers."""

    def __init__(self, request: bytes, ready_pattern: bytes, group: Group, pb: bool) -> None:
        self.request = request
        self.ready_pattern = ready_pattern
        self.group = group
        self.pb = pb
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.ready = False
        self.done = False  # ready, or failed
        self.client_id = ""
        self.seen: dict[bytes, float] = {}
        self.carry = b""
        self.events = 0
        self.bytes = 0

    def itself(self) -> Sub:
        """The protocol factory of this one connection."""
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the GET request."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        """Stamp new markers; count events and bytes once measuring."""
        now = time.time()
        if not self.done:
            self._before_ready(data)
        buf = self.carry + data
        if self.group.counting:
            self.bytes += len(data)
            self.events += buf.count(b"\ndata:") - self.carry.count(b"\ndata:")
        if b"qz" in buf:
            seen = self.seen
            for found in MARK.findall(buf):
                if found not in seen:
                    seen[found] = now
                    if len(seen) == self.group.writes:
                        self.group.hit_complete()
        self.carry = buf[-CARRY:]

    def _before_ready(self, data: bytes) -> None:
        self.head += data
        status = http_status(self.head)
        if status not in (0, 200):
            self._fail()
        elif self.ready_pattern in self.head:
            if not self.pb:
                self.ready = self.done = True
                self.group.hit_ready()
            elif not self.client_id:
                found = re.search(rb'"clientId"\s*:\s*"([^"]+)"', self.head)
                if found:
                    self.client_id = found.group(1).decode()
                    self.group.to_subscribe.put_nowait(self)

    def subscribed(self, ok: bool) -> None:
        """PocketBase answered this stream's subscribe request."""
        if self.done:
            return
        if ok:
            self.ready = self.done = True
            self.group.hit_ready()
        else:
            self._fail()

    def connection_lost(self, exc: Exception | None) -> None:
        """The server closed the stream."""
        self._fail()

    def _fail(self) -> None:
        if not self.done:
            self.done = True
            self.group.hit_ready(failed=True)

    def close(self) -> None:
        """Drop the connection at once."""
        if self.transport is not None:
            self.transport.abort()


def stream_request(spec: ClientSpec, encoding: str = "") -> bytes:
    """The raw GET of one subscriber (with the token for voicestack)."""
    auth = f"Authorization: Bearer {spec.token}\r\n" if spec.token else ""
    accept = f"Accept-Encoding: {encoding}\r\n" if encoding else ""
    return (
        f"GET {spec.path} HTTP/1.1\r\nHost: {HOST}:{spec.port}\r\n{auth}{accept}"
        "Accept: text/event-stream\r\nCache-Control: no-store\r\n\r\n"
    ).encode()


async def _post_kept_alive(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, path: str, body: bytes
) -> int:
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HTTP_TIMEOUT_S)
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if length and int(length.group(1)):
        await asyncio.wait_for(reader.readexactly(int(length.group(1))), HTTP_TIMEOUT_S)
    return http_status(head)


async def _subscriber_pool(spec: ClientSpec, group: Group, errors: list[str]) -> None:
    """Post each PocketBase stream's subscription, over a few kept-alive connections."""

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(HOST, spec.port)
        try:
            while True:
                sub = await group.to_subscribe.get()
                body = json.dumps({"clientId": sub.client_id, "subscriptions": [spec.topic]})
                status = await _post_kept_alive(
                    reader, writer, spec.port, "/api/realtime", body.encode()
                )
                if status != 204 and len(errors) < 3:
                    errors.append(f"subscribe answered {status}")
                sub.subscribed(status == 204)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(POOL)))


async def _subscribe_all(spec: ClientSpec, group: Group, errors: list[str]) -> list[Sub]:
    loop = asyncio.get_running_loop()
    pb = spec.kind == "pocketbase"
    request = stream_request(spec)
    pattern = {
        "pocketbase": b"\n\n",
        "feed": b"event: ready",
        "watch": b"\n\n",
        "floor": b"\r\n\r\n",
    }[spec.kind]
    subs: list[Sub] = []
    for first in range(0, spec.count, spec.batch):
        fresh = [
            Sub(request, pattern, group, pb) for _ in range(min(spec.batch, spec.count - first))
        ]
        opened = await asyncio.gather(
            *(
                asyncio.wait_for(loop.create_connection(s.itself, HOST, spec.port), 30)
                for s in fresh
            ),
            return_exceptions=True,
        )
        for sub, outcome in zip(fresh, opened, strict=True):
            if isinstance(outcome, BaseException):
                if len(errors) < 3:
                    errors.append(f"connect: {outcome!r}")
                sub._fail()
        subs.extend(fresh)
        deadline = time.monotonic() + spec.ready_timeout_s
        while group.ready < len(subs) and time.monotonic() < deadline:
            group.ready_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(group.ready_changed.wait(), 1.0)
        if group.ready < len(subs):
            errors.append(
                f"{len(subs) - group.ready} streams not ready in {spec.ready_timeout_s} s"
            )
            break
    return subs


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _client_main(conn: Connection, spec: ClientSpec) -> None:
    loop = asyncio.get_running_loop()
    group = Group(spec.writes)
    result = ClientResult()
    pool: asyncio.Task[None] | None = None
    if spec.kind == "pocketbase":
        pool = asyncio.create_task(_subscriber_pool(spec, group, result.errors))
    subs = await _subscribe_all(spec, group, result.errors)
    result.subscribed = sum(s.ready for s in subs)
    result.failed = spec.count - result.subscribed
    conn.send(("ready", result.subscribed, result.failed))
    message = await loop.run_in_executor(None, conn.recv)
    assert message[0] == "go"
    cpu0, wall0 = _cpu(), time.monotonic()
    live = [s for s in subs if s.ready]
    group.total = len(live)
    group.complete = sum(len(s.seen) >= spec.writes for s in live)
    group.counting = True
    conn.send(("going",))
    _, sent, timeout = await loop.run_in_executor(None, conn.recv)
    if group.complete < group.total:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(group.all_seen.wait(), timeout)
    await asyncio.sleep(SETTLE_S)
    result.cpu_s, result.window_s = _cpu() - cpu0, time.monotonic() - wall0
    wanted = {key.encode(): at for key, at in sent.items()}
    for sub in subs:
        got = [(at - wanted[m]) for m, at in sub.seen.items() if m in wanted]
        result.latencies += got
        result.missing += len(wanted) - len(got)
        result.events += sub.events
        result.bytes += sub.bytes
        if sub.seen:
            result.last_delivery = max(result.last_delivery, max(sub.seen.values()))
        sub.close()
    if pool is not None:
        pool.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await pool
    conn.send(result)


def client_process(conn: Connection, spec: ClientSpec) -> None:
    """A client process: subscribe `spec.count` streams, then report every write's arrivals."""
    raise_nofile_limit()
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_client_main(conn, spec))
