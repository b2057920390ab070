"""Read timeouts: a client that sends half a request, or stops sending a body, is answered 408
in the error shape where an answer can still be sent, and its connection is closed.

A real server process with `--header-timeout-s 1 --body-timeout-s 1`, spoken to over raw sockets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from tests.support.agent import Threads, ended, feed, read_until, snapshot
from tests.support.server import TEST_APP, ServerProcess, running_server
from tests.support.voice import FORM_HEADERS, multipart_head

pytestmark = pytest.mark.anyio

HEADER_TIMEOUT = {
    "error": {
        "code": "header_timeout",
        "message": "The request's headers did not arrive within 1 s (--header-timeout-s).",
    }
}
BODY_TIMEOUT = {
    "error": {
        "code": "body_timeout",
        "message": "The request body stalled: no bytes arrived for 1 s (--body-timeout-s)."
        " Send the body without pauses.",
    }
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--header-timeout-s", "1", "--body-timeout-s", "1"]
    with running_server(tmp_path_factory.mktemp("timeouts"), TEST_APP, args) as server:
        yield server


async def exchange(server: ServerProcess, *pieces: bytes, gap_s: float = 0.0) -> bytes:
    """Send `pieces` on a fresh connection (`gap_s` apart), then stop sending; everything the
    server sends until it closes the connection (which must happen within 10 s)."""
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(gap_s)
        return await asyncio.wait_for(reader.read(), 10.0)  # until end of file
    finally:
        writer.close()


def answers(raw: bytes) -> list[tuple[int, str | None, object]]:
    """The responses in `raw`: (status, connection header, JSON body)."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (s.partition(":") for s in lines)}
        length = int(headers["content-length"])
        body, raw = rest[:length], rest[length:]
        found.append((int(status_line.split()[1]), headers.get("connection"), json.loads(body)))
    return found


def request_head(server: ServerProcess, method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {server.url.removeprefix('http://')}"]
    lines += [f"Authorization: Bearer {server.token}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    server: ServerProcess,
) -> None:
    assert await exchange(server) == b""


async def test_half_a_request_head_is_answered_408_and_closed(server: ServerProcess) -> None:
    half = request_head(server, "GET", "/healthz")[:30]

    assert answers(await exchange(server, half)) == [(408, "close", HEADER_TIMEOUT)]


async def test_the_next_request_on_a_kept_alive_connection_is_timed_too(
    server: ServerProcess,
) -> None:
    whole = request_head(server, "GET", "/healthz")

    raw = await exchange(server, whole, whole[:30], gap_s=0.2)

    version = answers(raw)[0][2]["version"]  # type: ignore[index]
    assert answers(raw) == [
        (200, None, {"ok": True, "version": version}),
        (408, "close", HEADER_TIMEOUT),
    ]


@pytest.mark.parametrize(
    ("path", "content_type", "sent"),
    [
        ("/api/threads", "application/json", b'{"title": '),
        ("/voice", FORM_HEADERS["content-type"], multipart_head({"threadId": "x"})),
    ],
    ids=["json", "voice-upload"],
)
async def test_a_body_that_stalls_is_answered_408_and_closed(
    server: ServerProcess, path: str, content_type: str, sent: bytes
) -> None:
    head = request_head(
        server, "POST", path, f"Content-Type: {content_type}", "Content-Length: 100000"
    )

    assert answers(await exchange(server, head + sent)) == [(408, "close", BODY_TIMEOUT)]


async def test_a_slow_body_that_keeps_coming_is_not_cut(server: ServerProcess) -> None:
    body = b'{"title": "slow but steady"}'
    head = request_head(
        server,
        "POST",
        "/api/threads",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    )
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]  # 4 pieces, 0.6 s apart

    [(status, connection, created)] = answers(await exchange(server, head, *pieces, gap_s=0.6))

    assert (status, connection, list(created)) == (201, "close", ["id"])  # type: ignore[arg-type]


async def test_an_event_stream_outlives_the_body_timeout(server: ServerProcess) -> None:
    async with server.client() as client:
        threads = Threads(client)
        thread_id = await threads.create()
        async with feed(client, thread_id) as stream:
            await snapshot(stream)
            await asyncio.sleep(2.0)  # twice the body timeout, waiting on `receive`
            _, reply_id = await threads.send(thread_id, "still there?")
            events = await read_until(stream, ended(reply_id))

    assert events[-1].json["status"] == "failed"  # no provider: what matters is that it came


async def test_a_live_conversation_outlasts_the_header_timeout(server: ServerProcess) -> None:
    """Once a connection is upgraded to the audio WebSocket, no HTTP head is timed on it: the
    head timer once fired into the socket and broke its framing."""
    import websockets

    async with server.client() as http:
        thread_id = await Threads(http).create()
    url = f"{server.url.replace('http', 'ws', 1)}/api/threads/{thread_id}/audio"
    async with websockets.connect(f"{url}?token={server.token}") as socket:
        await socket.send(json.dumps({"type": "start", "sampleRate": 16000, "format": "pcm16"}))
        assert json.loads(await socket.recv())["type"] == "ready"
        for _ in range(25):  # 2.5 s of silence in 100 ms frames: past the 1 s header timeout
            await socket.send(bytes(3200))
            await asyncio.sleep(0.1)
        await socket.send(json.dumps({"type": "stop"}))
        with pytest.raises(websockets.ConnectionClosedOK) as closed:
            await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1000
