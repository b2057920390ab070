"""The floor for the one-subscriber row of `bench/peers.py`: a send's SQL, little else around it.

It serves one thread of a database with voicestack's own schema: `GET /feed`, an event stream,
and `POST /send` `{"text": ...}`, which runs in one transaction the statements a voicestack send
runs (the thread's row and place, the message and its feed event, the pending reply and its
event, the reply's job, the change log's row; the schema's triggers fire as they do in
voicestack), then writes both events to every subscriber in one chunk. No token, no rate limit, no
ASGI, no hub, no change recorder: httptools, uvloop, apsw and SQLite on this machine, and the
bench's way of writing (a fresh connection per write, one every `--interval-s`).

    python3 -m bench.send_floor --writes 60 --interval-s 0.3

prints write→delivery p50 and p99 as its client measures them. Its server's own time, and
PocketBase's and voicestack's, come from a capture of the loopback (bench/wire_times.py).

With `--asgi` the same routes are a bare ASGI app behind uvicorn, as voicestack is served: the
difference between the two is what the HTTP server adds to a send.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from starlette.types import Receive, Scope, Send

from bench.peers_clients import marker
from bench.sse_client import HOST, percentile

# An SSE comment first in every chunk: bench/wire_times.py tells the floor's events by it.
FLOOR_COMMENT = b":floor\n"
# The peers bench's markers (bench/peers_clients.py `marker`), as bytes on the wire.
MARKER = re.compile(rb"qz\d{5}zq")

_MESSAGE_COLUMNS = (
    "id, thread_id, position, role, text, status, error_code, error_message, author, reply_to,"
    " prompt_tokens, completion_tokens, tool_call_count, wall_ms, created_at, updated_at,"
    " audio_file_id, audio_in_seconds, speech_chars, speech_seconds, voice, agent, cost_usd,"
    " unreported_steps, recalled"
)
_INSERT_MESSAGE = (
    "INSERT INTO messages(id, thread_id, position, role, text, status, author, reply_to,"
    " audio_file_id, audio_in_seconds, speak, agent, model, created_at, updated_at)"
    f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_MESSAGE_COLUMNS}"
)
_NAMES = [name.strip() for name in _MESSAGE_COLUMNS.split(",")]


def make_database(path: Path) -> str:
    """A database with voicestack's schema and one thread (a few turns in it); its id."""
    from voicestack.agent.threads import insert_thread, start_turn
    from voicestack.schema import ALL_MIGRATIONS
    from voicestack.store import Store

    store = Store(str(path), migrations=ALL_MIGRATIONS)
    store.start()
    try:
        thread_id: str = store.write_sync(lambda db: insert_thread(db, None, title="floor")).value
        for _ in range(5):
            store.write_sync(lambda db: start_turn(db, thread_id, "warm-up", None))
    finally:
        store.close()
    return thread_id


class FloorSends:
    """The send's statements on one apsw connection, and the subscribers' transports."""

    def __init__(self, path: Path, thread_id: str) -> None:
        import apsw

        self.conn = apsw.Connection(str(path))
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.thread_id = thread_id
        self.subscribers: list[asyncio.Transport] = []

    def send(self, text: str) -> tuple[dict[str, str], bytes]:
        """Save `text` and queue its reply, as voicestack's send does: the answer, and both
        events in one chunk for the subscribers."""
        conn, thread = self.conn, self.thread_id
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("SELECT id, agent FROM threads WHERE id = ?", (thread,)).fetchall()
            place: int = conn.execute(
                "SELECT coalesce((SELECT last_position FROM threads WHERE id = ?), 0) + 1",
                (thread,),
            ).get
            stamp = time.time()
            message_id, reply_id = f"msg_{secrets.token_hex(10)}", f"msg_{secrets.token_hex(10)}"
            events = []
            for row_values in (
                (message_id, thread, place, "user", text, "complete", None, None),
                (reply_id, thread, place + 1, "assistant", "", "pending", None, message_id),
            ):
                row = conn.execute(
                    _INSERT_MESSAGE, (*row_values, None, 0.0, 0, None, None, stamp, stamp)
                ).fetchall()[0]
                data = json.dumps(dict(zip(_NAMES, row, strict=True)), separators=(",", ":"))
                conn.execute(
                    "INSERT INTO thread_events(thread_id, kind, ref, data) VALUES (?, ?, ?, ?)",
                    (thread, "message", row_values[0], data),
                )
                events.append((conn.last_insert_rowid(), data))
            conn.execute("UPDATE threads SET updated_at = ? WHERE id = ?", (stamp, thread))
            conn.execute(
                "INSERT INTO jobs(id, kind, name, args, ref, run_at, max_attempts, created_at)"
                " VALUES (?, 'reply', 'reply', ?, ?, ?, 1, ?)",
                (f"job_{secrets.token_hex(10)}", "{}", reply_id, stamp, stamp),
            )
            version = conn.execute("SELECT coalesce(max(version), 0) + 1 FROM _changes").get
            conn.execute(
                "INSERT INTO _changes(version, tables, rows, committed_at) VALUES (?, ?, ?, ?)",
                (version, '["jobs","messages","thread_events","threads"]', "{}", stamp),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        chunk = FLOOR_COMMENT + b"".join(
            b"id: %d\nevent: message\ndata: %s\n\n" % (event_id, data.encode())
            for event_id, data in events
        )
        return {"messageId": message_id, "replyId": reply_id}, chunk


class FloorProtocol(asyncio.Protocol):
    """One connection: `GET` subscribes; `POST` sends, answers 201 and closes."""

    def __init__(self, sends: FloorSends) -> None:
        import httptools

        self.sends = sends
        self.parser = httptools.HttpRequestParser(self)
        self.body = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        """Parse (httptools calls back on_body and on_message_complete)."""
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        """Collect the request's body."""
        self.body += body

    def on_message_complete(self) -> None:
        """Subscribe, or send and answer."""
        assert self.transport is not None
        if self.parser.get_method() == b"GET":
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"cache-control: no-store\r\n\r\n"
            )
            self.sends.subscribers.append(self.transport)
            return
        sent, chunk = self.sends.send(json.loads(self.body)["text"])
        for subscriber in self.sends.subscribers:
            subscriber.write(chunk)
        answer = json.dumps(sent).encode()
        self.transport.write(
            b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(answer), answer)
        )
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop feeding a subscriber that went away."""
        if self.transport in self.sends.subscribers:
            self.sends.subscribers.remove(self.transport)


class FloorApp:
    """The same two routes as a bare ASGI app, for uvicorn to serve: what the HTTP server adds
    to the floor. A send writes both events to each subscriber through its ASGI `send`."""

    def __init__(self, sends: FloorSends) -> None:
        self.sends = sends
        self.streams: list[Send] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`GET`: an event stream until the client leaves; `POST`: a send, answered 201."""
        if scope["method"] == "GET":
            headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            self.streams.append(send)
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            finally:
                self.streams.remove(send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        sent, chunk = self.sends.send(json.loads(body)["text"])
        events = {"type": "http.response.body", "body": chunk, "more_body": True}
        for stream in self.streams:
            await stream(events)
        answer = json.dumps(sent).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


async def serve(path: Path, thread_id: str, asgi: bool = False) -> None:
    """Serve the floor on a free loopback port until killed; print where. `asgi`: as an ASGI
    app behind uvicorn (httptools, uvloop, no access log), as voicestack is served."""
    sends = FloorSends(path, thread_id)
    if asgi:
        import uvicorn

        sock = socket.create_server((HOST, 0))
        config = uvicorn.Config(
            FloorApp(sends), http="httptools", lifespan="off", access_log=False, log_level="warning"
        )
        print(f"serving http://{HOST}:{sock.getsockname()[1]}", flush=True)
        await uvicorn.Server(config).serve(sockets=[sock])
        return
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FloorProtocol(sends), HOST, 0)
    print(f"serving http://{HOST}:{server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Future()


class _Subscriber(asyncio.Protocol):
    def __init__(self) -> None:
        self.seen: dict[str, float] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        request = b"GET /feed HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        cast(asyncio.Transport, transport).write(request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        for found in MARKER.finditer(data):
            self.seen.setdefault(found.group().decode(), now)


async def _post(port: int, text: str) -> float:
    body = json.dumps({"text": text}).encode()
    sent = time.time()
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(
        b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await reader.read()
    writer.close()
    return sent


async def measure(port: int, writes: int, interval_s: float) -> list[float]:
    """Write→delivery seconds of `writes` sends, one every `interval_s`, to one subscriber."""
    loop = asyncio.get_running_loop()
    transport, subscriber = await loop.create_connection(_Subscriber, HOST, port)
    try:
        await asyncio.sleep(0.3)
        for _ in range(3):  # unmeasured, as the peers bench's warm-up writes
            await _post(port, "warm-up")
            await asyncio.sleep(interval_s)
        sent = {}
        for k in range(writes):
            sent[marker(k)] = await _post(port, marker(k))
            await asyncio.sleep(interval_s)
        await asyncio.sleep(0.3)
    finally:
        transport.close()
    return [subscriber.seen[m] - at for m, at in sent.items() if m in subscriber.seen]


def main() -> None:
    """Run the floor and its client; print the client's figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=60)
    parser.add_argument("--interval-s", type=float, default=0.3)
    parser.add_argument("--serve", nargs=2, metavar=("DB", "THREAD"), help=argparse.SUPPRESS)
    parser.add_argument("--asgi", action="store_true", help="as an ASGI app behind uvicorn")
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(serve(Path(args.serve[0]), args.serve[1], args.asgi))
        return
    with tempfile.TemporaryDirectory(prefix="send-floor-") as work:
        path = Path(work) / "floor.db"
        thread_id = make_database(path)
        cmd = [sys.executable, "-m", "bench.send_floor", "--serve", str(path), thread_id]
        cmd += ["--asgi"] if args.asgi else []
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            port = int(line.rsplit(":", 1)[1])
            latencies = asyncio.run(measure(port, args.writes, args.interval_s))
        finally:
            child.kill()
            child.wait()
    result: dict[str, Any] = {
        "writes": args.writes,
        "delivered": len(latencies),
        "p50_ms": round(percentile(sorted(latencies), 50) * 1000, 2),
        "p99_ms": round(percentile(sorted(latencies), 99) * 1000, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
