"""The processes of a `bench/stream.py` run: the fake provider, the server, py-spy, CPU counters.

Both children run from a source tree (this repo or a scratch copy with a prototype), on loopback
ports, with output in a log file, and die with the bench (PR_SET_PDEATHSIG); every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.server_access import NO_LIMITS_ENV
from bench.sse_client import die_with_parent
from bench.stream_profile import parse_thread_names

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


class Child:
    """A child process whose output goes to a log file; started and stopped with bounded waits."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, cmd: list[str], env: dict[str, str], cwd: Path, ready: bytes) -> str:
        """Start `cmd`; return the first match of the regex `ready` in its output (group 1)."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=die_with_parent,
            )
        pattern = re.compile(ready)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.log()}")
            match = pattern.search(self.log_path.read_bytes())
            if match:
                return match.group(1).decode()
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start in {START_TIMEOUT_S} s:\n{self.log()}")

    def log(self) -> str:
        """The tail of the child's combined output."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-4000:]
        return ""

    def cpu(self) -> float:
        """CPU seconds (user + system, all threads) used so far."""
        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system

    def thread_cpu(self) -> dict[int, float]:
        """CPU seconds per OS thread id."""
        return {t.id: t.user_time + t.system_time for t in psutil.Process(self.pid).threads()}

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def child_env(source: Path) -> dict[str, str]:
    """The environment of both children: no VOICESTACK_/OPENAI_ settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICESTACK_", "OPENAI_"))}
    paths = list(dict.fromkeys([str(source), str(REPO)]))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["VOICESTACK_LOAD_APPS"] = ""  # no entry-point apps
    env["VOICESTACK_LOAD_TOOLS"] = ""  # no tools: replies are plain text
    env["COLUMNS"] = "250"  # keep rich from wrapping the "serving http://..." line
    return env


def start_fake(workdir: Path, source: Path) -> tuple[Child, int]:
    """Start the fake OpenAI provider; return it and its port."""
    fake = Child("fake-openai", workdir)
    cmd = [sys.executable, "-m", "voicestack.testing.fake_openai", "--host", HOST, "--port", "0"]
    port = fake.start(cmd, child_env(source), source, rb"listening on http://127\.0\.0\.1:(\d+)")
    return fake, int(port)


def start_server(
    workdir: Path, source: Path, fake_port: int, args: argparse.Namespace
) -> tuple[Child, int, Path]:
    """Start the voicestack server against the fake; return it, its port and its database."""
    server = Child("server", workdir)
    db = workdir / "stream.db"
    cmd = [
        sys.executable,
        "-m",
        "voicestack",
        "serve",
        "--embedding-model=",  # semantic memory off: these figures are the stream's alone
        "--host",
        HOST,
        "--port",
        "0",
        "--db",
        str(db),
        "--openai-base-url",
        f"http://{HOST}:{fake_port}/v1",
        "--flush-ms",
        f"{args.flush_ms:g}",
        # Keep every commit of the run in `_changes`, so each delta finds its commit time.
        "--change-log-keep",
        str(args.change_log_keep),
        "--no-access-log",
        "--log-level",
        "warning",
        *args.server_arg,
    ]
    env = {**child_env(source), **NO_LIMITS_ENV}
    port = server.start(cmd, env, source, rb"http://127\.0\.0\.1:(\d+)")
    return server, int(port), db


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Usage:
    """CPU counters of the three processes at one moment."""

    wall: float
    server: float
    server_threads: dict[int, float]
    fake: float
    client: float
    machine: float  # CPU seconds every process on the machine has used (all cores)

    @classmethod
    def take(cls, server: Child, fake: Child) -> Usage:
        """Read every counter now."""
        own = resource.getrusage(resource.RUSAGE_SELF)
        total = psutil.cpu_times()
        return cls(
            time.time(),
            server.cpu(),
            server.thread_cpu(),
            fake.cpu(),
            own.ru_utime + own.ru_stime,
            sum(total) - total.idle - getattr(total, "iowait", 0.0),
        )


class PySpy:
    """`py-spy record` on the server for the measured window (raw format, per thread)."""

    def __init__(self, pid: int, out: Path, rate: int, gil: bool = False) -> None:
        self.pid, self.out, self.rate, self.gil = pid, out, rate, gil
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.seconds = 0.0

    def start(self) -> None:
        """Attach and start sampling."""
        exe = shutil.which("py-spy")
        if exe is None:
            raise RuntimeError("py-spy is not installed: pip install py-spy")
        cmd = [exe, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--nonblocking"]
        cmd += ["--threads", "--format", "raw", "--output", str(self.out)]
        if self.gil:
            cmd.append("--gil")  # only samples of the thread holding the GIL
        self.out.unlink(missing_ok=True)
        log = self.out.with_suffix(".log").open("wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        time.sleep(0.5)
        self.started = time.monotonic()

    def stop(self) -> None:
        """Stop sampling; the profile is written when this returns."""
        if self.proc is None:
            return
        self.seconds = time.monotonic() - self.started
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def thread_names(pid: int) -> dict[int, str]:
    """OS thread id -> Python thread name of the server, from `py-spy dump` (if installed)."""
    exe = shutil.which("py-spy")
    if exe is None:
        return {}
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        dump = subprocess.run(
            [exe, "dump", "--pid", str(pid)], capture_output=True, timeout=30, check=False
        )
        return parse_thread_names(dump.stdout.decode(errors="replace"))
    return {}


async def wait_for_quiet(below_pct: float, max_wait_s: float, sample_s: float = 2.0) -> float:
    """Wait until the machine's busy CPU is under `below_pct` of one core; return the last reading.

    The machine may be shared: a run measured while other processes take a core measures them.
    Gives up after `max_wait_s` and runs anyway (the table shows the load during the run).
    """
    deadline = time.monotonic() + max_wait_s
    psutil.cpu_percent(interval=None)  # start a sampling interval
    while True:
        await asyncio.sleep(sample_s)
        busy = psutil.cpu_percent(interval=None) * (os.cpu_count() or 1)
        if busy < below_pct or time.monotonic() >= deadline:
            return busy
        print(f"  machine busy {busy:.0f}% of one core; waiting", file=sys.stderr, flush=True)
