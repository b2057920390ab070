"""Fixtures: the anyio backend, real server processes, HTTP clients bound to them, a fake OpenAI.

`server` is a fresh server (and database) per test. A module whose tests do not depend on which
rows exist opts, by a mark, into a server that modules share, which saves a process start per test:

    pytestmark = pytest.mark.shared_server       # the one server of the test app
    pytestmark = pytest.mark.agent_server(*flags)  # replies from the fake OpenAI, these flags
    pytestmark = pytest.mark.agent_server(provider=False)  # an agent server with no provider

An agent server is one `shared_agent_server` for each provider and set of flags that modules ask
for; `start_agent_server` gives a test servers of its own.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.agent import StartAgentServer, Threads, running_agent_server
from tests.support.api import Api
from tests.support.browser import PageLog
from tests.support.server import TEST_APP, ServerProcess, running_server
from tests.support.store import open_store
from tests.support.voice import Recordings
from tests.support.web_server import web_server
from voicestack.config import Settings
from voicestack.runtime import Runtime
from voicestack.store import Store
from voicestack.testing.fake_openai import FakeOpenAI

StartServer = Callable[..., ServerProcess]
Figures = Callable[[str], None]
FIGURES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FIGURES] = []
    config.addinivalue_line(
        "markers", "shared_server: `server` is the one test-app server that such modules share"
    )
    config.addinivalue_line(
        "markers",
        "agent_server(*flags, provider=True): `server` is the shared agent server with these"
        " flags, its replies from the fake OpenAI (reset for each test); provider=False: none",
    )


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Figures that tests measured (fuzz case counts, ...) print once, after the results, instead
    of in the middle of the progress lines."""
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    """A started Runtime in this process, on a database file of its own: no server."""
    runtime = Runtime(Settings(db=tmp_path / "runtime.db"))
    await runtime.start()
    yield runtime
    await runtime.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A started Store on a file of its own with the demo app's tables (tests/support/store.py);
    a module with a `store` of its own uses that instead."""
    store = open_store(tmp_path / "store.db")
    yield store
    store.close()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """`figures(line)`: a line for the run's closing "figures" section."""
    return request.config.stash[FIGURES].append


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


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server running the test app for every test, of any module, that tolerates the rows
    of all the others."""
    with running_server(tmp_path_factory.mktemp("shared"), TEST_APP) as server:
        yield server


@pytest.fixture
def server(request: pytest.FixtureRequest) -> ServerProcess:
    """The server a test talks to: the test app on a fresh database, or the shared server that
    the test's `shared_server` or `agent_server` mark asks for."""
    if request.node.get_closest_marker("shared_server") is not None:
        shared: ServerProcess = request.getfixturevalue("shared_server")
        return shared
    agent = request.node.get_closest_marker("agent_server")
    if agent is not None:
        start_shared: StartAgentServer = request.getfixturevalue("shared_agent_server")
        fake: FakeOpenAI | None = (
            request.getfixturevalue("fake") if agent.kwargs.get("provider", True) else None
        )
        return start_shared(fake.api_base if fake is not None else None, *agent.args)
    start: StartServer = request.getfixturevalue("start_server")
    return start()


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for `server`; every request, and every wait on a stream, times out.

    Afterwards the server's log lines from this test are printed (pytest shows them on failure).
    """
    start = server.log_size()
    try:
        async with server.client() as http:
            yield http
    finally:
        print(f"--- server log during the test ({server.url})\n{server.log(start)}")


@pytest.fixture
def api(client: httpx.AsyncClient) -> Api:
    """Function calls through `client`."""
    return Api(client)


@pytest.fixture
def threads(client: httpx.AsyncClient) -> Threads:
    """The thread routes through `client`."""
    return Threads(client)


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    """One fake OpenAI server for the whole run; a test takes it through `fake`."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fake(fake_openai: FakeOpenAI) -> FakeOpenAI:
    """The fake OpenAI server, with no plans and no logged requests left from earlier tests."""
    fake_openai.reset()
    return fake_openai


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Recordings:
    """Real speech in every audio format, recorded once for the module."""
    return Recordings(tmp_path_factory.mktemp("speech"))


@pytest.fixture
async def openai_client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    """The real openai client for `fake`, which it never retries on its own."""
    async with openai.AsyncOpenAI(base_url=fake.api_base, api_key="test", max_retries=0) as c:
        yield c


@pytest.fixture
def start_agent_server(tmp_path: Path) -> Iterator[StartAgentServer]:
    """Start servers of the test's own whose replies come from a model provider:
    `start_agent_server(api_base, *extra_args, env=None)` (an `api_base` of None: no provider).

    Each is a `running_agent_server` on a fresh database; on teardown it must exit 0 after
    SIGTERM.
    """
    with contextlib.ExitStack() as stack:
        workdirs = (tmp_path / f"agent{n}" for n in itertools.count())

        def start(
            api_base: str | None, *extra_args: str, env: Mapping[str, str | None] | None = None
        ) -> ServerProcess:
            server = running_agent_server(next(workdirs), api_base, *extra_args, env=env)
            return stack.enter_context(server)

        yield start


@pytest.fixture(scope="session")
def shared_agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartAgentServer]:
    """`shared_agent_server(api_base, *extra_args)`: the server with that provider and those
    flags, started when first asked for and shared by every test that asks for the same ones.

    For tests that tolerate each other's threads (each works in threads of its own); the
    servers run until the end of the run.
    """
    with contextlib.ExitStack() as stack:
        servers: dict[tuple[str | None, ...], ServerProcess] = {}

        def shared(api_base: str | None, *extra_args: str) -> ServerProcess:
            key = (api_base, *extra_args)
            if key not in servers:
                workdir = tmp_path_factory.mktemp("agent")
                servers[key] = stack.enter_context(
                    running_agent_server(workdir, api_base, *extra_args)
                )
            return servers[key]

        yield shared


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOpenAI]:
    """A fake OpenAI of the browser tests' module, whose scripts no other module sees."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def site(provider: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The browser tests' server for their module: replies from `provider`, the test tools."""
    with web_server(tmp_path_factory.mktemp("web"), provider.api_base) as server:
        yield server


@pytest.fixture
def log() -> Iterator[PageLog]:
    """What a browser page logged; the test fails on an error or warning it did not expect."""
    log = PageLog()
    yield log
    log.assert_clean()
