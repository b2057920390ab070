"""A client that stops reading an event stream is cut after --send-timeout-s: one warning line in
the log, no traceback, and its stream no longer counts against its token's limit."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.conftest import StartServer
from tests.support.server import ServerProcess

CUT = (
    "WARNING voicestack.reactive.keepalive: cut an event stream whose client read nothing for"
    " 1 s (--send-timeout-s)"
)


@contextlib.contextmanager
def stalled_stream(server: ServerProcess, path: str) -> Iterator[socket.socket]:
    """A connection that asks for `path` and then never reads (a tiny receive buffer, so the
    server's writes back up at once)."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {server.token}\r\n\r\n"
    sock.sendall(request.encode())
    try:
        yield sock
    finally:
        sock.close()


def wait_for_line(server: ServerProcess, line: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while line not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)


MULTI = "/api/watch?q=" + quote(json.dumps([{"id": "a", "name": "items.list"}]))


@pytest.mark.parametrize("path", ["/api/watch/items.list", MULTI], ids=["watch", "multi"])
def test_a_client_that_stops_reading_is_cut_with_one_warning(
    start_server: StartServer, path: str
) -> None:
    server = start_server(
        "tests.apps.inventory",
        "--send-timeout-s",
        "1",
        "--ping-s",
        "0.5",
        "--max-streams-per-token",
        "1",
    )
    with stalled_stream(server, path), server.sync_client() as http:
        for _ in range(400):  # every commit sends the whole, growing list
            added = http.post("/api/mutation/items.add", json={"args": {"name": "x" * 200}})
            assert added.status_code == 200, added.text
        wait_for_line(server, CUT)
        # The cut stream's place is free again: the token may open its one stream.
        with http.stream("GET", "/api/watch/items.count") as again:
            assert again.status_code == 200

    log = server.log()
    assert log.count(CUT) == 1
    assert "Traceback" not in log
    assert " ERROR " not in log
