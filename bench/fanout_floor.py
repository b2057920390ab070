"""The floor for `bench/fanout.py`: the least a Python fan-out server can do, same wire format.

`python bench/fanout.py --floor` runs against this instead of voicestack. It speaks just enough
of the same HTTP as voicestack for the bench (`GET /healthz`, `GET /api/watch/ticks.latest` as
SSE, `POST /api/mutation/ticks.add`), keeps ticks in memory, and fans each tick out by writing one
pre-framed chunk to every subscriber's transport in one loop (uvloop when installed). Its figures
are what this machine, its kernel and the bench's client cost on their own: a voicestack figure
close to them has no server overhead left to remove.

    python -m bench.fanout_floor --port 0   # prints "serving http://127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import cast

HEADERS = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-store\r\ntransfer-encoding: chunked\r\n\r\n"
)


def frame(version: int, value: object) -> bytes:
    """One SSE value event as voicestack sends it, framed as one HTTP/1.1 chunk."""
    data = json.dumps({"value": value, "version": version}, separators=(",", ":")).encode()
    event = b"id: %d\nevent: value\ndata: %s\n\n" % (version, data)
    return b"%x\r\n%s\r\n" % (len(event), event)


class FloorState:
    """The subscribers and the newest tick."""

    def __init__(self) -> None:
        self.subscribers: set[asyncio.Transport] = set()
        self.version = 0
        self.latest: dict[str, float | int] | None = None

    def add_tick(self) -> dict[str, float | int]:
        """Make a tick, write it to every subscriber, return it."""
        at = time.time()
        self.version += 1
        self.latest = {"id": self.version, "at": at}
        chunk = frame(self.version, self.latest)
        for transport in self.subscribers:
            transport.write(chunk)
        return self.latest


class FloorProtocol(asyncio.Protocol):
    """One connection: parse one request, answer it (or keep it as a subscriber)."""

    def __init__(self, state: FloorState) -> None:
        self.state = state
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the transport."""
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget a subscriber that went away."""
        if self.transport is not None:
            self.state.subscribers.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        """Answer a request once its head (and body) has arrived."""
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0 or self.transport is None:
            return
        head = self.buffer[:head_end].decode("latin-1")
        method, path = head.split(" ", 2)[:2]
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buffer) < head_end + 4 + length:
            return
        self.buffer = b""
        if method == "GET" and path.startswith("/api/watch/ticks.latest"):
            self.transport.write(HEADERS + frame(self.state.version, self.state.latest))
            self.state.subscribers.add(self.transport)
        elif method == "POST" and path == "/api/mutation/ticks.add":
            tick = self.state.add_tick()
            self._reply({"value": tick, "version": self.state.version})
        elif method == "GET" and path == "/healthz":
            self._reply({"ok": True, "version": "floor"})
        else:
            self._reply({"error": {"code": "not_found", "message": "Not here."}}, 404)

    def _reply(self, body: object, status: int = 200) -> None:
        assert self.transport is not None
        payload = json.dumps(body).encode()
        reason = b"OK" if status == 200 else b"Not Found"
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(payload), payload)
        )
        self.transport.close()


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:`port` until cancelled or terminated."""
    loop = asyncio.get_running_loop()
    state = FloorState()
    server = await loop.create_server(lambda: FloorProtocol(state), "127.0.0.1", port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(f"floor serving http://127.0.0.1:{bound}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    """Parse `--port` and serve."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args, _unknown = parser.parse_known_args()
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.port))


if __name__ == "__main__":
    main()
