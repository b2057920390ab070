"""A real `voicestack serve` process on a loopback port, for tests that need HTTP and SSE.

httpx's ASGI transport buffers whole bodies, so an endless event stream would hang in it; the
server therefore runs as its own process, started the way a user starts it.
"""

from __future__ import annotations

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

    def client(self, timeout: float = 10.0) -> httpx.AsyncClient:
        """An HTTP client for this server whose every request, and every wait, times out."""
        return httpx.AsyncClient(base_url=self.url, timeout=timeout)

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
        """Start the process and wait until GET /healthz answers."""
        assert self.process is None or self.process.poll() is not None, "already running"
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
                    pytest.fail(f"the server exited with {code} while starting:\n{self.log()}")
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
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
