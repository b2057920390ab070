"""Fixtures: the anyio backend, real server processes, and HTTP clients bound to them.

`server` is a fresh server (and database) per test. A module whose tests tolerate each other's
rows opts into one server for all of them, which saves a process start per test:

    @pytest.fixture
    def server(shared_server):
        return shared_server
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.api import Api
from tests.support.server import ServerProcess, running_server

TEST_APP = "tests.apps.inventory"

StartServer = Callable[..., ServerProcess]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start `voicestack serve --app APP [extra args]` processes, each with its own database
    unless `db_path` names another server's.

    On teardown every server still running gets SIGTERM and must exit 0.
    """
    with contextlib.ExitStack() as stack:
        started: list[ServerProcess] = []

        def start(
            app: str = TEST_APP, *extra_args: str, db_path: Path | None = None
        ) -> ServerProcess:
            workdir = tmp_path / f"server{len(started)}"
            workdir.mkdir()
            server = running_server(workdir, app, list(extra_args), db_path=db_path)
            started.append(stack.enter_context(server))
            return started[-1]

        yield start


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server running the test app for every test of a module."""
    with running_server(tmp_path_factory.mktemp("shared"), TEST_APP) as server:
        yield server


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    """A server running the test app on a fresh database."""
    return start_server()


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for `server`; every request, and every wait on a stream, times out.

    Afterwards the server's log lines from this test are printed (pytest shows them on failure).
    """
    start = server.log_size()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
            yield http
    finally:
        print(f"--- server log during the test ({server.url})\n{server.log(start)}")


@pytest.fixture
def api(client: httpx.AsyncClient) -> Api:
    """Function calls through `client`."""
    return Api(client)
