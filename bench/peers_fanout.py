"""The fan-out rows of `bench/peers.py`: a fresh server, N subscribers, M writes at a fixed rate.

The subscribers live in client processes (bench/peers_clients.py) so that one client never
holds more streams than a process may, nor takes one core alone; their CPU is reported with the
server's. Writes are sent on schedule, each on its own connection, without waiting for the
previous one to answer: PocketBase broadcasts inside the create request, and a write that waits
for the last would measure that instead of the rate asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import sys
import time
import urllib.parse
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from bench.peers_clients import ClientResult, ClientSpec, client_process, marker
from bench.peers_report import FEED, FLOOR, FLOOR_ASGI, PB, WATCH, FanoutRow
from bench.peers_servers import (
    COLLECTION,
    Fake,
    Floor,
    PocketBase,
    RssPeak,
    Voicestack,
    tree_cpu,
    tree_rss,
)
from bench.sse_client import http_call, percentile
from bench.stream_procs import wait_for_quiet

FD_SPARE = 200  # files a server needs besides its subscribers (database, logs, listeners)
SETTLE_S = 1.0
MIN_PER_CLIENT = 100  # streams: below this, another client process is not worth its start


def _own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def _machine_busy() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


async def _recv(conn: Connection, timeout: float) -> Any:
    if not await asyncio.get_running_loop().run_in_executor(None, conn.poll, timeout):
        raise TimeoutError(f"a client process did not answer in {timeout:g} s")
    return conn.recv()


# -- fan-out -----------------------------------------------------------------------------------


def _skip_reason(variant: str, n: int, workers: int, nofile: int) -> str:
    if variant == PB and n + FD_SPARE > nofile:
        return (
            f"PocketBase serves from one process, which would hold {n:,} sockets; "
            f"RLIMIT_NOFILE here is {nofile:,} per process"
        )
    if variant != PB and math.ceil(n / workers) + FD_SPARE > nofile:
        return f"{n:,} streams over {workers} worker(s) exceed RLIMIT_NOFILE {nofile:,}"
    return ""


async def run_fanout(
    args: argparse.Namespace, work: Path, fake: Fake, variant: str, n: int, processes: int
) -> FanoutRow:
    """Fresh server, N subscribers spread over `processes` client processes, M writes, every
    delivery measured."""
    workers = args.big_workers if variant != PB and n >= args.workers_from else 1
    row = FanoutRow(variant, n, workers, args.writes)
    row.skipped = _skip_reason(variant, n, workers, args.nofile)
    if row.skipped:
        return row
    row.busy_before_pct = await wait_for_quiet(args.quiet_pct, args.quiet_wait_s)
    server: PocketBase | Floor | Voicestack
    if variant == PB:
        server = PocketBase(args.pocketbase, work)
    elif variant in (FLOOR, FLOOR_ASGI):
        server = Floor(work, asgi=variant == FLOOR_ASGI)
    else:
        server = Voicestack(work, fake.port, workers)
    spawn = multiprocessing.get_context("spawn")
    clients: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    try:
        await server.start()
        thread_id = ""
        if isinstance(server, PocketBase):
            path, topic, token = "/api/realtime", f"{COLLECTION}/*", ""
            write_path, write_token = f"/api/collections/{COLLECTION}/records", None
        elif isinstance(server, Floor):
            path, topic, token = "/feed", "", ""
            write_path, write_token = "/send", None
        else:
            thread_id = await server.create_thread()
            token, topic = server.token, ""
            write_path, write_token = f"/api/threads/{thread_id}/messages", server.token
            path = f"/api/threads/{thread_id}/events"
            if variant == WATCH:
                query = urllib.parse.quote(json.dumps({"threadId": thread_id}))
                path = f"/api/watch/messages.list?args={query}"
        row.rss_base_mib = tree_rss(server.pid) / 2**20
        rss_base = tree_rss(server.pid)
        shares = max(1, min(processes, n))
        for k in range(shares):
            count = n // shares + (1 if k < n % shares else 0)
            spec = ClientSpec(
                variant_kind(variant),
                server.port,
                path,
                token,
                count,
                args.writes,
                topic,
                ready_timeout_s=args.timeout_s,
            )
            ours, theirs = spawn.Pipe()
            proc: multiprocessing.process.BaseProcess = spawn.Process(
                target=client_process, args=(theirs, spec), daemon=True
            )
            proc.start()
            clients.append((proc, ours))
        row.client_processes = len(clients)
        connect_timeout = args.timeout_s + n / 50
        for _, conn in clients:
            _, subscribed, _failed = await _recv(conn, connect_timeout)
            row.subscribed += subscribed
        await asyncio.sleep(SETTLE_S)
        row.idle_kib_per_sub = (tree_rss(server.pid) - rss_base) / 1024 / n
        row.expected = n * args.writes
        fake_cpu0 = fake.child.cpu()
        await _measure(args, server, clients, row, write_path, write_token)
        if isinstance(server, Voicestack):
            # The provider stand-in is not the server, but it is not someone else's load either.
            row.fake_cpu_s = fake.child.cpu() - fake_cpu0
            row.other_cpu_s -= row.fake_cpu_s
    finally:
        for proc, _ in clients:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        server.stop()
        if isinstance(server, Voicestack):
            await fake.reset()
    return row


async def run_fanout_unbound(
    args: argparse.Namespace, work: Path, fake: Fake, variant: str, n: int, processes: int
) -> tuple[FanoutRow, int]:
    """run_fanout, run again with twice the client processes while the busiest one used more
    than `args.client_busy` of its window: then the client, not the server, set the pace. At
    most `args.max_clients` processes, each of at least MIN_PER_CLIENT streams. Returns the last
    run's row, with a note of any raise, and its processes, for later repeats to start from."""
    most = max(1, min(args.max_clients, n // MIN_PER_CLIENT))
    raised: list[str] = []
    while True:
        row = await run_fanout(args, work, fake, variant, n, processes)
        bound = 0 < args.client_busy < row.client_busy and not row.skipped
        if not bound or processes >= most:
            break
        raised.append(f"with {processes}, {row.client_busy * 100:.0f} %")
        processes = min(most, processes * 2)
        print(f"  client-bound ({raised[-1]}): again with {processes}", file=sys.stderr)
    if raised:
        row.notes.append(
            f"run with {processes} client processes. The busiest one's CPU ÷ its window: "
            + "; ".join(raised)
        )
    if bound:
        row.notes.append(
            f"client-bound: the busiest of {processes} client processes (the most allowed) "
            f"used {row.client_busy * 100:.0f} % of its window"
        )
    return row, processes


def variant_kind(variant: str) -> str:
    """The client's name for a server variant."""
    kinds = {PB: "pocketbase", FEED: "feed", WATCH: "watch", FLOOR: "floor", FLOOR_ASGI: "floor"}
    return kinds[variant]


async def _measure(
    args: argparse.Namespace,
    server: PocketBase | Floor | Voicestack,
    clients: list[tuple[multiprocessing.process.BaseProcess, Connection]],
    row: FanoutRow,
    write_path: str,
    write_token: str | None,
) -> None:
    for _ in range(args.warmup):  # unmeasured: a first request may pay for lazy set-up
        await _write(server.port, write_path, write_token, -1, time.time())
    await asyncio.sleep(args.interval_s)
    with RssPeak(server.pid) as peak:
        cpu0, own0, busy0 = tree_cpu(server.pid), _own_cpu(), _machine_busy()
        window0 = time.monotonic()
        for _, conn in clients:
            conn.send(("go",))
        for _, conn in clients:
            await _recv(conn, 30)
        start = time.time() + 0.2
        answers = await asyncio.gather(
            *(
                _write(server.port, write_path, write_token, k, start + k * args.interval_s)
                for k in range(args.writes)
            )
        )
        sent = {marker(k): at for k, (at, _, _) in enumerate(answers)}
        for _, conn in clients:
            conn.send(("wait", {m[2:7]: at for m, at in sent.items()}, args.timeout_s))
        results: list[ClientResult] = [
            await _recv(conn, args.timeout_s + 60) for _, conn in clients
        ]
        server_cpu, own_cpu = tree_cpu(server.pid) - cpu0, _own_cpu() - own0
        busy = _machine_busy() - busy0
        row.window_s = time.monotonic() - window0
    latencies = sorted(x for r in results for x in r.latencies)
    row.delivered = len(latencies)
    if latencies:
        row.p50_ms = percentile(latencies, 50) * 1000
        row.p99_ms = percentile(latencies, 99) * 1000
        row.max_ms = latencies[-1] * 1000
    row.events = sum(r.events for r in results)
    last = max((r.last_delivery for r in results), default=0.0)
    if last > start:
        row.events_per_s = row.events / (last - min(sent.values()))
    row.server_cpu_s = server_cpu
    row.client_cpu_s = sum(r.cpu_s for r in results) + own_cpu
    row.client_busy = max((r.cpu_s / r.window_s for r in results if r.window_s), default=0.0)
    row.rss_peak_mib = peak.peak / 2**20
    row.peak_kib_per_sub = (peak.peak - row.rss_base_mib * 2**20) / 1024 / row.n
    waits = sorted(w for _, w, _ in answers)
    row.write_p50_ms, row.write_max_ms = percentile(waits, 50) * 1000, waits[-1] * 1000
    statuses = sorted({s for _, _, s in answers})
    if any(not 200 <= s < 300 for s in statuses):
        row.notes.append(f"write statuses {statuses}")
    row.notes += [e for r in results for e in r.errors][:3]
    if row.subscribed < row.n:
        row.notes.append(f"only {row.subscribed:,} of {row.n:,} subscribed")
    row.other_cpu_s = busy - server_cpu - row.client_cpu_s


async def _write(
    port: int, path: str, token: str | None, k: int, at: float
) -> tuple[float, float, int]:
    await asyncio.sleep(max(0.0, at - time.time()))
    body = json.dumps({"text": marker(k) if k >= 0 else "warm-up"}).encode()
    sent = time.time()
    status, _ = await http_call(port, "POST", path, body, token)
    return sent, time.time() - sent, status
