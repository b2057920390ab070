"""The voicestack server a fan-out run measures: started fresh, stopped with bounded waits."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.server_access import NO_LIMITS_ENV, server_token
from bench.sse_client import HOST, die_with_parent

REPO = Path(__file__).resolve().parents[1]
APP = "bench.fanout_app"
HOOK_DIR = Path(__file__).resolve().parent / "_serverhook"
SERVER_START_TIMEOUT_S = 30.0
SERVER_STOP_TIMEOUT_S = 20.0


class Server:
    """A `python -m voicestack serve` child on a free loopback port with a throwaway database."""

    def __init__(
        self,
        workdir: Path,
        source: Path = REPO,
        hook_env: dict[str, str] | None = None,
        floor: bool = False,
    ) -> None:
        self.workdir = workdir
        self.source = source
        self.floor = floor
        self.log_path = workdir / "server.log"
        self.hook_env = hook_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.db = workdir / "fanout.db"
        self.token: str | None = None  # the first admin token, once started (the floor has none)

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Start the server and wait until it prints the address it listens on."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICESTACK_")}
        # The source tree first (it may be a scratch copy with a prototype), then this repo for
        # bench.fanout_app, then the measurement hooks when asked for.
        paths = list(dict.fromkeys([str(self.source), str(REPO)]))
        if self.hook_env:
            paths.insert(0, str(HOOK_DIR))
            env.update(self.hook_env)
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["VOICESTACK_LOAD_APPS"] = ""  # no entry-point apps: only the bench app
        env.update(NO_LIMITS_ENV)
        env["COLUMNS"] = "250"  # keep rich from wrapping the "serving http://..." line
        cmd = [
            sys.executable,
            "-m",
            "voicestack",
            "serve",
            # Semantic memory off: these figures are the feed's alone.
            "--embedding-model=",
            "--host",
            HOST,
            "--port",
            "0",
            "--db",
            str(self.db),
            "--app",
            APP,
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        if self.floor:
            cmd = [sys.executable, "-m", "bench.fanout_floor", "--port", "0"]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.source,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        pattern = re.compile(rb"http://127\.0\.0\.1:(\d+)")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log()}")
            match = pattern.search(self.log_path.read_bytes())
            if match:
                self.port = int(match.group(1))
                self.token = server_token(self.db)  # written before the server listens
                return
            time.sleep(0.05)
        raise RuntimeError(f"the server did not start in {SERVER_START_TIMEOUT_S} s:\n{self.log()}")

    def log(self) -> str:
        """The tail of the server's combined stdout/stderr."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-4000:]
        return ""

    def rss(self) -> int:
        """Resident memory of the server process, in bytes."""
        return psutil.Process(self.pid).memory_info().rss

    def cpu(self) -> float:
        """CPU seconds (user + system, all threads) the server has used so far."""
        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system

    def signal(self, sig: int) -> None:
        """Send `sig` to the server if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited in time; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode
