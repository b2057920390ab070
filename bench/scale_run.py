"""One measured row of `bench/scale.py`: a fresh set-up, N thread-feed subscribers, M writes.

The subscribers are bench/peers_clients.py's client processes, spread evenly over the set-up's
stream ports (the two edges, or the one server); the writes (a message posted to the thread,
which starts a reply from the fake provider) go out on schedule, in turn over the write ports,
without waiting for each other, exactly as in bench/peers_fanout.py. Write→delivery is a
marker's arrival at a subscriber minus its write's send time, for every subscriber and write.

CPU is read per process with psutil over the measured window (from the first write to the last
delivery): the primary (the server or its `--workers` tree), the edges, nats-server, the
clients, the fake provider, and what everything else on the machine used meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import subprocess
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from bench.peers_clients import ClientResult, ClientSpec, marker
from bench.peers_fanout import _machine_busy, _own_cpu, _recv
from bench.peers_servers import Fake
from bench.scale_clients import client_process, make_tokens
from bench.scale_setups import EDGES, EDGES_VIA, NatsCounts, Setup, StreamSpy, make_setup
from bench.sse_client import http_call, percentile
from bench.stream_procs import REPO, wait_for_quiet

FD_SPARE = 200  # files a server needs besides its subscribers
SETTLE_S = 1.0
SHARED, DISTINCT = "one token", "a token each"


@dataclass
class ScaleRow:
    """What one run measured (times in ms, CPU in seconds)."""

    section: str  # fanout, dedup or hop
    setup: str
    n: int
    mode: str = SHARED
    writes: int = 0
    subscribed: int = 0
    delivered: int = 0
    expected: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    write_p50_ms: float = 0.0
    primary_streams: int = 0  # distinct subscriptions the primary serves
    primary_cpu_s: float = 0.0  # over the measured window
    subscribe_cpu_s: float = 0.0  # the primary's, while the subscribers connected
    edges_cpu_s: float = 0.0
    nats_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    fake_cpu_s: float = 0.0
    others_cpu_s: float = 0.0
    window_s: float = 0.0
    nats_in_msgs: int = 0
    nats_out_msgs: int = 0
    nats_out_bytes: int = 0
    # What the primary published on streams to edges over the window (messages, bytes).
    stream_msgs: int = 0
    stream_bytes: int = 0
    load1: float = 0.0
    runs: int = 1
    commit: str = ""  # the source tree's commit (with "+" when it had changes)
    skipped: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_per_stream_ms(self) -> float:
        """The primary's CPU over the window per distinct subscription, in ms."""
        return self.primary_cpu_s * 1000 / self.primary_streams if self.primary_streams else 0.0


Clients = list[tuple[multiprocessing.process.BaseProcess, Connection]]


def source_commit() -> str:
    """The commit of the tree the servers run from ("+" when it has uncommitted changes)."""

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(
                ["git", *argv], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    return head + ("+" if head and git("status", "--porcelain", "--untracked-files=no") else "")


def skip_reason(setup: str, n: int, nofile: int) -> str:
    """Why a row cannot run here ("" if it can)."""
    holders = 1 if setup.startswith("single") else 2
    if math.ceil(n / holders) + FD_SPARE > nofile:
        return f"{n:,} streams in {holders} process(es) exceed RLIMIT_NOFILE {nofile:,}"
    return ""


def _spawn_clients(
    args: argparse.Namespace, setup: Setup, path: str, n: int, tokens: list[str]
) -> Clients:
    spawn = multiprocessing.get_context("spawn")
    ports = setup.stream_ports
    shares = max(math.ceil(n / args.per_client), min(n, len(ports)))
    clients: Clients = []
    first = 0
    for k in range(shares):
        count = n // shares + (1 if k < n % shares else 0)
        spec = ClientSpec(
            "feed",
            ports[k % len(ports)],
            path,
            setup.token,
            count,
            args.writes,
            ready_timeout_s=args.timeout_s,
        )
        ours, theirs = spawn.Pipe()
        proc = spawn.Process(
            target=client_process,
            args=(theirs, spec, tokens[first : first + count]),
            daemon=True,
        )
        proc.start()
        clients.append((proc, ours))
        first += count
    return clients


async def run_row(
    args: argparse.Namespace, work: Path, fake: Fake, section: str, kind: str, n: int, mode: str
) -> ScaleRow:
    """A fresh set-up of `kind`, `n` subscribers of one thread (`mode`: one token shared, or a
    token each), `args.writes` writes; every delivery measured."""
    row = ScaleRow(section, kind, n, mode, args.writes, commit=source_commit())
    row.skipped = skip_reason(kind, n, args.nofile)
    if row.skipped:
        return row
    await wait_for_quiet(args.quiet_pct, args.quiet_wait_s)
    via_edges = section != "fanout" or args.edge_writes
    if kind == EDGES and section == "fanout" and via_edges:
        row.setup = EDGES_VIA
    setup = make_setup(kind, work, fake.port, args.nats, via_edges)
    clients: Clients = []
    try:
        await setup.start()
        thread_id = await setup.create_thread()
        tokens = make_tokens(setup.db, n) if mode == DISTINCT else []
        if kind == EDGES:
            # One stream of the thread, whoever its clients are and whichever edges hold them.
            row.primary_streams = 1
        else:
            row.primary_streams = n
        cpu0 = setup.primary_cpu()
        clients = _spawn_clients(args, setup, f"/api/threads/{thread_id}/events", n, tokens)
        for _, conn in clients:
            _, subscribed, _failed = await _recv(conn, args.timeout_s + n / 50)
            row.subscribed += subscribed
        row.subscribe_cpu_s = setup.primary_cpu() - cpu0
        await asyncio.sleep(SETTLE_S)
        row.expected = n * args.writes
        await _measure(args, setup, fake, clients, row, f"/api/threads/{thread_id}/messages")
    finally:
        for proc, _ in clients:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        setup.stop()
        await fake.reset()
    row.load1 = os.getloadavg()[0]
    return row


async def _write(port: int, path: str, token: str, k: int, at: float) -> tuple[float, float, int]:
    """Post write `k` (its marker) at `at`: (sent, seconds to the answer, status; 0 when the
    request failed or timed out, which the row's notes report)."""
    await asyncio.sleep(max(0.0, at - time.time()))
    body = json.dumps({"text": marker(k) if k >= 0 else "warm-up"}).encode()
    sent = time.time()
    try:
        status, _ = await http_call(port, "POST", path, body, token)
    except (OSError, TimeoutError):
        status = 0
    return sent, time.time() - sent, status


async def _measure(
    args: argparse.Namespace,
    setup: Setup,
    fake: Fake,
    clients: Clients,
    row: ScaleRow,
    write_path: str,
) -> None:
    ports = setup.write_ports
    for k in range(args.warmup):  # unmeasured: a first request may pay for lazy set-up
        await _write(ports[k % len(ports)], write_path, setup.token, -1, time.time())
    await asyncio.sleep(args.interval_s)
    primary0, others0 = setup.primary_cpu(), setup.other_cpu()
    own0, busy0, fake0 = _own_cpu(), _machine_busy(), fake.child.cpu()
    spy = StreamSpy()
    if setup.nats_url is not None:
        await spy.start(setup.nats_url)
    nats0 = await setup.nats_counts()
    window0 = time.monotonic()
    for _, conn in clients:
        conn.send(("go",))
    for _, conn in clients:
        await _recv(conn, 30)
    start = time.time() + 0.2
    answers = await asyncio.gather(
        *(
            _write(ports[k % len(ports)], write_path, setup.token, k, start + k * args.interval_s)
            for k in range(args.writes)
        )
    )
    sent = {marker(k): at for k, (at, _, _) in enumerate(answers)}
    for _, conn in clients:
        conn.send(("wait", {m[2:7]: at for m, at in sent.items()}, args.timeout_s))
    results: list[ClientResult] = [await _recv(conn, args.timeout_s + 60) for _, conn in clients]
    row.window_s = time.monotonic() - window0
    row.primary_cpu_s = setup.primary_cpu() - primary0
    others = {k: v - others0.get(k, 0.0) for k, v in setup.other_cpu().items()}
    row.edges_cpu_s, row.nats_cpu_s = others.get("edges", 0.0), others.get("nats", 0.0)
    row.fake_cpu_s = fake.child.cpu() - fake0
    row.client_cpu_s = sum(r.cpu_s for r in results) + _own_cpu() - own0
    nats1 = await setup.nats_counts()
    await spy.stop()
    row.stream_msgs, row.stream_bytes = spy.msgs, spy.bytes
    if nats0 is not None and nats1 is not None:
        moved: NatsCounts = nats1.minus(nats0)
        row.nats_in_msgs = moved.in_msgs
        # Without the spy's own copies.
        row.nats_out_msgs = moved.out_msgs - spy.msgs
        row.nats_out_bytes = moved.out_bytes - spy.bytes
    ours = row.primary_cpu_s + row.edges_cpu_s + row.nats_cpu_s + row.client_cpu_s
    row.others_cpu_s = _machine_busy() - busy0 - ours - row.fake_cpu_s
    latencies = sorted(x for r in results for x in r.latencies)
    row.delivered = len(latencies)
    if latencies:
        row.p50_ms = percentile(latencies, 50) * 1000
        row.p99_ms = percentile(latencies, 99) * 1000
        row.max_ms = latencies[-1] * 1000
    waits = sorted(w for _, w, _ in answers)
    row.write_p50_ms = percentile(waits, 50) * 1000
    statuses = sorted({s for _, _, s in answers})
    if any(not 200 <= s < 300 for s in statuses):
        row.notes.append(f"write statuses {statuses}")
    row.notes += [e for r in results for e in r.errors][:3]
    if row.subscribed < row.n:
        row.notes.append(f"only {row.subscribed:,} of {row.n:,} subscribed")
