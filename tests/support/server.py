"""A real `voicestack serve` process on a loopback port, for tests that need HTTP and SSE.

httpx's ASGI transport buffers whole bodies, so an endless event stream would hang in it; the
server therefore runs as its own process, started the way a user starts it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
TEST_APP = "tests.apps.inventory"

START_TIMEOUT_S = 15.0
PORT_ATTEMPTS = 3
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env() -> dict[str, str]:
    """The test's environment without VOICESTACK_* settings, importing from the repo root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICESTACK_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # Only the apps a test names: no installed entry-point apps.
    env["VOICESTACK_LOAD_APPS"] = ""
    # No embedding jobs unless a test asks for them (--embedding-model): the other tests'
    # exact provider requests, jobs and commits stay as they were.
    env["VOICESTACK_EMBEDDING_MODEL"] = ""
    return env


class ServerProcess:
    """One `python -m voicestack serve` process; `restart` reuses its database and port.

    `env` adds variables to the server's environment (a value of None removes one), e.g.
    `{"VOICESTACK_LOAD_TOOLS": "testtools", "OPENAI_API_KEY": None}`.
    """

    def __init__(
        self,
        workdir: Path,
        app: str,
        extra_args: list[str] | None = None,
        env: Mapping[str, str | None] | None = None,
        *,
        db_path: Path | None = None,
    ) -> None:
        self.db_path = db_path or workdir / "test.db"
        self.log_path = workdir / "server.log"
        self.config_path = workdir / "voicestack.toml"
        self.config_path.write_text("")  # pins the config: never the repo's own file
        self.app = app
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.token: str | None = None  # the first admin token, read once the server is up
        self._user_ids: dict[str, str] = {}

    @property
    def command(self) -> list[str]:
        """The command line that starts the server."""
        return [
            sys.executable,
            "-m",
            "voicestack",
            "serve",
            "--port",
            str(self.port),
            "--db",
            str(self.db_path),
            "--app",
            self.app,
            "--config",
            str(self.config_path),
            "--no-access-log",
            *self.extra_args,
        ]

    @property
    def token_path(self) -> Path:
        """`<db>.token`, where `serve` keeps the first admin token."""
        return self.db_path.with_name(self.db_path.name + ".token")

    @property
    def auth_headers(self) -> dict[str, str]:
        """`Authorization: Bearer` with the first admin token."""
        assert self.token, "the server has not started"
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def page_url(self) -> str:
        """The web page's URL with the admin token, as `serve` prints it."""
        return f"{self.url}/?token={self.token}"

    def client(self, timeout: float = 10.0, token: str | None = None) -> httpx.AsyncClient:
        """An HTTP client for this server, authenticated with `token` (default: the first admin
        token), whose every request, and every wait, times out."""
        headers = {"Authorization": f"Bearer {token}"} if token else self.auth_headers
        return httpx.AsyncClient(base_url=self.url, timeout=timeout, headers=headers)

    def sync_client(self, timeout: float = 10.0) -> httpx.Client:
        """A blocking HTTP client for this server with the first admin token."""
        return httpx.Client(base_url=self.url, timeout=timeout, headers=self.auth_headers)

    def create_token(self, user: str, admin: bool = False) -> str:
        """A new token for `user` (created if new), made with `voicestack token create`."""
        command = [sys.executable, "-m", "voicestack", "token", "create", "--user", user]
        command += ["--db", str(self.db_path), *(["--admin"] if admin else [])]
        done = subprocess.run(command, cwd=REPO, env=server_env(), capture_output=True, check=True)
        return done.stdout.decode().strip()

    def user_id(self, name: str = "admin") -> str:
        """The id of user `name` (default: the first admin, whose token `client` sends), as
        `voicestack token list --json` shows it; messages carry it as their `author`."""
        if name not in self._user_ids:
            command = [sys.executable, "-m", "voicestack", "token", "list", "--json"]
            command += ["--db", str(self.db_path)]
            done = subprocess.run(
                command, cwd=REPO, env=server_env(), capture_output=True, check=True
            )
            self._user_ids.update({row["user"]: row["userId"] for row in json.loads(done.stdout)})
        return self._user_ids[name]

    def log(self, since: int = 0) -> str:
        """What the server wrote to stderr and stdout, from byte offset `since` on."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    def log_size(self) -> int:
        """The log's length now: pass it to `log` later to see only what came after."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def environment(self) -> dict[str, str]:
        """The server's environment: `server_env()` with this server's `env` applied."""
        env = server_env()
        for name, value in self.env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def start(self) -> None:
        """Start the process and wait until GET /healthz answers.

        On the first start, a port some other process took since `free_port` chose it is
        replaced by a new one (the machine runs other test suites too); a restart keeps its port.
        """
        first = self.token is None
        for attempt in range(1, PORT_ATTEMPTS + 1):
            if self._start() is None:
                return
            if not first or attempt == PORT_ATTEMPTS:
                pytest.fail(f"the server could not listen on port {self.port}:\n{self.log()}")
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"

    def _start(self) -> str | None:
        """One attempt of `start`: None once the server answers, "port_taken" when it could
        not listen on its port."""
        assert self.process is None or self.process.poll() is not None, "already running"
        since = self.log_size()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(timeout=1.0) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    self.process = None
                    if "address already in use" in self.log(since):
                        return "port_taken"
                    pytest.fail(f"the server exited with {code} while starting:\n{self.log()}")
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        self.token = self.token_path.read_text().strip()
                        return None
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    pytest.fail(f"the server did not answer /healthz in time:\n{self.log()}")
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Send `sig`, wait for the process to exit and return its exit code."""
        process = self.process
        assert process is not None, "the server is not running"
        process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the server did not exit within {timeout} s of {sig!r}:\n{self.log()}")
        finally:
            self.process = None

    def restart(self) -> None:
        """Stop (if running, asserting a clean exit) and start again on the same db and port."""
        if self.running:
            assert self.stop() == 0, self.log()
        self.start()

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """Kill the process without ceremony (only when it failed to behave)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@contextmanager
def running_server(
    workdir: Path,
    app: str,
    extra_args: list[str] | None = None,
    env: Mapping[str, str | None] | None = None,
    *,
    db_path: Path | None = None,
) -> Iterator[ServerProcess]:
    """A started server; afterwards, if still running, SIGTERM must stop it with exit code 0.

    The whole log is printed on the way out, which pytest shows when a test failed.
    """
    server = ServerProcess(workdir, app, extra_args, env, db_path=db_path)
    try:
        server.start()
        yield server
        code = server.stop() if server.running else 0
        assert code == 0, f"the server exited with {code} after SIGTERM"
    finally:
        if server.running:
            server.kill()
        print(f"--- {' '.join(server.command)}\n{server.log()}")
