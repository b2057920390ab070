"""The lean SSE load client the benchmarks share: raw asyncio connections, parsing after the run.

While measuring, `data_received` only stamps and keeps the bytes; chunked decoding, SSE parsing
and JSON happen afterwards, so the client takes as little CPU from the server as it can.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import ctypes
import json
import math
import resource
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from bench.server_access import auth_line

HOST = "127.0.0.1"


HTTP_TIMEOUT_S = 30.0


SCAN_EVERY_S = 0.25


def raise_nofile_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (the server inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft, hard


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the bench dies, so no server is left behind."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)


class Tracker:
    """Counts subscribers that have seen a byte pattern; `done` is set when all have."""

    def __init__(self) -> None:
        self.remaining = 0
        self.failed = 0
        self.done = asyncio.Event()

    def expect(self, clients: Sequence[SseClient], pattern: bytes) -> None:
        """Wait for `pattern` on every client in `clients` (a new round)."""
        self.done.clear()
        self.remaining = len(clients)
        for client in clients:
            client.want = pattern
        for client in clients:
            client.scan()
        if self.remaining <= 0:
            self.done.set()

    def hit(self, failed: bool = False) -> None:
        """One client has seen the pattern (or has failed and never will)."""
        self.failed += failed
        self.remaining -= 1
        if self.remaining <= 0:
            self.done.set()


class SseClient(asyncio.Protocol):
    """One subscriber: sends the request, then only stamps and stores what arrives."""

    def __init__(self, request: bytes, tracker: Tracker) -> None:
        self.request = request
        self.tracker = tracker
        self.transport: asyncio.Transport | None = None
        self.reads: list[tuple[float, bytes]] = []
        self.want: bytes | None = None
        self.status = 0
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the GET request."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        """Stamp and keep the bytes; the only per-event work done while measuring."""
        self.reads.append((time.time(), data))
        if self.status == 0:
            self.status = http_status(b"".join(d for _, d in self.reads))
            if self.status not in (0, 200):
                self._fail()
                return
        want = self.want
        if want is not None and want in data:
            self.want = None
            self.tracker.hit()

    def connection_lost(self, exc: Exception | None) -> None:
        """The server closed the stream: nothing more will come."""
        self.lost = True
        self._fail()

    def _fail(self) -> None:
        if self.want is not None:
            self.want = None
            self.tracker.hit(failed=True)

    def scan(self) -> None:
        """Look for the wanted pattern in the last two reads (it may straddle them).

        Cheap on purpose: it runs for every subscriber still waiting while events arrive.
        """
        if self.want is None:
            return
        if self.lost or self.status not in (0, 200):
            self._fail()
            return
        if self.want in b"".join(data for _, data in self.reads[-2:]):
            self.want = None
            self.tracker.hit()

    def close(self) -> None:
        """Drop the connection at once."""
        if self.transport is not None:
            self.transport.abort()


def http_status(data: bytes) -> int:
    """The status code of a response head; 0 while too short to tell, -1 if not HTTP."""
    if len(data) < 12:
        return 0
    if data.startswith(b"HTTP/1.") and data[9:12].isdigit():
        return int(data[9:12])
    return -1


async def http_call(
    port: int, method: str, path: str, body: bytes = b"", token: str | None = None
) -> tuple[int, bytes]:
    """One request (with `token`, if any) on a fresh `Connection: close` connection; returns
    (status, body)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), HTTP_TIMEOUT_S)
    try:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n"
            f"{auth_line(token)}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        raw = await asyncio.wait_for(reader.read(), HTTP_TIMEOUT_S)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        raise RuntimeError(f"{method} {path}: malformed response {raw[:200]!r}")
    payload = raw[head_end + 4 :]
    if b"transfer-encoding: chunked" in raw[:head_end].lower():
        payload = b"".join(dechunk(payload, 0, len(payload))[0])
    return http_status(raw), payload


def dechunk(raw: bytes, pos: int, end: int) -> tuple[list[bytes], list[tuple[int, int]]]:
    """Split a chunked body into its chunks, with each chunk's (start, stop) offsets in `raw`."""
    parts: list[bytes] = []
    spans: list[tuple[int, int]] = []
    while pos < end:
        line_end = raw.find(b"\r\n", pos, end)
        if line_end < 0:
            break
        size = int(raw[pos:line_end].split(b";")[0], 16)
        if size == 0:
            break
        start = line_end + 2
        stop = min(start + size, end)
        parts.append(raw[start:stop])
        spans.append((start, stop))
        pos = start + size + 2
    return parts, spans


@dataclass(slots=True)
class Event:
    """One SSE `value` event as a subscriber received it."""

    received: float
    version: int
    value: Any


def parse_stream(reads: Sequence[tuple[float, bytes]]) -> tuple[int, list[Event]]:
    """(HTTP status, value events) of one subscriber, each stamped when its last byte came."""
    if not reads:
        return 0, []
    raw = b"".join(data for _, data in reads)
    ends: list[int] = []
    total = 0
    for _, data in reads:
        total += len(data)
        ends.append(total)
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        return http_status(raw), []
    _, spans = dechunk(raw, head_end + 4, len(raw))
    events: list[Event] = []
    pending = b""
    for start, stop in spans:
        combined = pending + raw[start:stop]
        offset = start - len(pending)  # raw offset of combined[i] for i >= len(pending)
        pos = 0
        while (sep := combined.find(b"\n\n", pos)) >= 0:
            last_byte = offset + sep + 1
            received = reads[bisect.bisect_right(ends, last_byte)][0]
            event = _parse_event(combined[pos:sep], received)
            if event is not None:
                events.append(event)
            pos = sep + 2
        pending = combined[pos:]
    return http_status(raw), events


def _parse_event(block: bytes, received: float) -> Event | None:
    kind = b"message"
    data = None
    for line in block.split(b"\n"):
        if line.startswith(b"event:"):
            kind = line[6:].strip()
        elif line.startswith(b"data:"):
            data = line[5:].strip()
    if kind != b"value" or data is None:
        return None  # pings and anything else
    body = json.loads(data)
    return Event(received, body["version"], body["value"])


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


async def wait_ready(tracker: Tracker, timeout: float, clients: Sequence[SseClient] = ()) -> bool:
    """Wait until the tracker's round is done or `timeout`; rescans for split patterns."""
    deadline = time.monotonic() + timeout
    while not tracker.done.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tracker.done.wait(), min(SCAN_EVERY_S, remaining))
        if not tracker.done.is_set():
            for client in clients:
                client.scan()
    return True


def watch_loop_errors() -> list[str]:
    """Collect exceptions raised in protocol callbacks, and cancel the current task on SIGTERM.

    An exception in a protocol callback would otherwise only be logged, and the run would look
    like a slow server; SIGTERM cancelling the run lets its `finally` stop the child processes.
    """
    loop = asyncio.get_running_loop()
    errors: list[str] = []

    def on_error(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        errors.append(f"{context.get('message')}: {context.get('exception')!r}")
        loop.default_exception_handler(context)

    loop.set_exception_handler(on_error)
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    return errors
