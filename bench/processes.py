"""Several server processes on one database file: commit→receive latency within and across them.

P processes share one SQLite file, as `voicestack serve --workers P` (one port; the kernel gives
each new connection to whichever worker accepts it first) or, with `--separate`, as P
`voicestack serve` processes on ports of their own (subscribers spread evenly). N subscribers
watch `ticks.latest` (bench/processes_app.py); M mutations go through one kept-alive connection,
so one process commits them all. Every value names the process that serves the stream and every
mutation the process that committed it, so each delivery is same-process (the writer's hub got
the commit from its own writer thread) or cross-process (found by polling `PRAGMA data_version`
and reading the `_changes` log). Latency is receive time minus the tick's `at`, stamped just
before its commit on the same machine clock.

One process may hold 20,000 open files here, so the subscribers are spread over client
processes of at most --per-client connections each.

    python3 -m bench.processes --processes 2 --subscribers 1000 --mutations 20
    python3 -m bench.processes --processes 2 --subscribers 20000 --mutations 10
    python3 -m bench.processes --processes 2 --subscribers 1000 --separate
    python3 -m bench.processes --processes 4 --subscribers 100 --write-connections 128

Only 127.0.0.1 is contacted; every wait is bounded and every server is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path

import psutil

from bench.fanout_server import REPO
from bench.sse_client import (
    HOST,
    HTTP_TIMEOUT_S,
    SseClient,
    Tracker,
    die_with_parent,
    parse_stream,
    percentile,
    raise_nofile_limit,
    wait_ready,
)

APP = "bench.processes_app"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 120.0


# -- the servers -------------------------------------------------------------------------------


class ServerGroup:
    """P server processes on one throwaway database: `--workers P`, or P separate servers."""

    def __init__(self, workdir: Path, processes: int, separate: bool) -> None:
        self.workdir = workdir
        self.processes = processes
        self.separate = separate
        self.db = workdir / "processes.db"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []

    def start(self) -> None:
        """Start the servers one after another (the first creates the database)."""
        (self.workdir / "voicestack.toml").write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICESTACK_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["VOICESTACK_LOAD_APPS"] = ""
        env["COLUMNS"] = "250"  # keep rich from wrapping the "serving http://..." line
        count, workers = (self.processes, 1) if self.separate else (1, self.processes)
        for n in range(count):
            cmd = [sys.executable, "-m", "voicestack", "serve", "--host", HOST, "--port", "0"]
            cmd += ["--db", str(self.db), "--app", APP, "--workers", str(workers)]
            cmd += ["--config", str(self.workdir / "voicestack.toml"), "--no-access-log"]
            cmd += ["--log-level", "warning", "--embedding-model="]  # no semantic memory
            # One token holds every stream here: no per-token limits.
            cmd += ["--max-streams-per-token", "0", "--rate-mutations-per-min", "0"]
            log_path = self.workdir / f"server{n}.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    cmd,
                    cwd=REPO,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    preexec_fn=die_with_parent,
                )
            self.procs.append(proc)
            self.ports.append(self._wait_for_port(proc, log_path))

    def _wait_for_port(self, proc: subprocess.Popen[bytes], log_path: Path) -> int:
        deadline = time.monotonic() + START_TIMEOUT_S
        pattern = re.compile(rb"serving \S*http://127\.0\.0\.1:(\d+)")
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"a server exited ({proc.returncode}):\n{log_path.read_text()}")
            match = pattern.search(log_path.read_bytes())
            if match:
                return int(match.group(1))
            time.sleep(0.05)
        raise RuntimeError(f"a server did not start in {START_TIMEOUT_S} s")

    @property
    def token(self) -> str:
        """The first admin token `serve` made for the database."""
        return (self.workdir / "processes.db.token").read_text().strip()

    def serving_processes(self) -> list[psutil.Process]:
        """The processes that serve requests (workers, or the separate servers)."""
        tops = [psutil.Process(p.pid) for p in self.procs]
        if self.separate or self.processes == 1:  # `--workers 1` serves from its own process
            return tops
        return [child for top in tops for child in top.children()]

    def stop(self) -> list[int | None]:
        """SIGTERM every server, SIGKILL what has not exited in time; the exit codes."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return [proc.returncode for proc in self.procs]


# -- a kept-alive connection for the mutations --------------------------------------------------


class Caller:
    """HTTP/1.1 requests on one kept-alive connection: one server process answers them all."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST `body` as JSON; returns (status, body)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), HTTP_TIMEOUT_S)
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        return int(head[9:12]), await self.reader.readexactly(length)

    def close(self) -> None:
        """Close the connection."""
        if self.writer is not None:
            self.writer.close()


# -- the subscribers, in client processes of their own ------------------------------------------


def _watch_request(port: int, token: str) -> bytes:
    return (
        f"GET /api/watch/ticks.latest HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()


async def _subscribe(
    ports: list[int], count: int, token: str, batch: int, tracker: Tracker
) -> list[SseClient]:
    loop = asyncio.get_running_loop()
    clients: list[SseClient] = []
    for first in range(0, count, batch):
        fresh = [
            SseClient(_watch_request(ports[(first + k) % len(ports)], token), tracker)
            for k in range(min(batch, count - first))
        ]
        tracker.expect(fresh, b"\n\n")  # the end of the initial value event
        await asyncio.gather(
            *(
                asyncio.wait_for(
                    loop.create_connection(lambda c=c: c, HOST, ports[(first + k) % len(ports)]),
                    HTTP_TIMEOUT_S,
                )
                for k, c in enumerate(fresh)
            ),
            return_exceptions=True,
        )
        clients.extend(fresh)
        await wait_ready(tracker, READY_TIMEOUT_S, fresh)
    return clients


async def _client_main(conn: Connection, ports: list[int], count: int, token: str, batch: int):
    loop = asyncio.get_running_loop()
    tracker = Tracker()
    clients = await _subscribe(ports, count, token, batch, tracker)
    serving: list[int | None] = []
    for client in clients:
        _, events = parse_stream(client.reads)
        serving.append(events[0].value["pid"] if events else None)
    conn.send(Counter(serving))
    last_version, last_tick, timeout = await loop.run_in_executor(None, conn.recv)
    tracker.expect(clients, b"\nid: %d\n" % last_version)
    await wait_ready(tracker, timeout, clients)
    deliveries: list[tuple[int | None, int, float]] = []  # (serving pid, tick id, latency s)
    without_last = 0
    for client, pid in zip(clients, serving, strict=True):
        _, events = parse_stream(client.reads)
        got = [(pid, e.value["tick"]["id"], e.received - e.value["tick"]["at"]) for e in events[1:]]
        without_last += all(tick != last_tick for _, tick, _ in got)
        deliveries += got
        client.close()
    conn.send((deliveries, without_last))


def client_process(conn: Connection, ports: list[int], count: int, token: str, batch: int) -> None:
    """A subscriber process: connect, report where, wait for the last version, report arrivals."""
    raise_nofile_limit()
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_client_main(conn, ports, count, token, batch))


# -- concurrent writes -------------------------------------------------------------------------


async def write_load(ports: list[int], token: str, connections: int, seconds: float) -> str:
    """`connections` kept-alive connections posting `ticks.add` for `seconds`: what happened.

    Every process commits through its own writer; SQLite's write lock (busy timeout 5 s) is all
    that serializes them, so a failure here would be a lock the writer gave up on.
    """
    statuses: Counter[int] = Counter()
    by_pid: Counter[int] = Counter()
    waits: list[float] = []
    errors: list[bytes] = []
    end = time.monotonic() + seconds

    async def write(n: int) -> None:
        caller = Caller(ports[n % len(ports)], token)
        try:
            while time.monotonic() < end:
                sent = time.monotonic()
                status, body = await caller.post("/api/mutation/ticks.add", b'{"args":{}}')
                waits.append(time.monotonic() - sent)
                statuses[status] += 1
                if status == 200:
                    by_pid[json.loads(body)["value"]["pid"]] += 1
                elif len(errors) < 3:
                    errors.append(body[:300])
        finally:
            caller.close()

    await asyncio.gather(*(write(n) for n in range(connections)))
    waits.sort()
    total = sum(statuses.values())
    return (
        f"write load: {connections} connections for {seconds:g} s: {total} mutations "
        f"({total / seconds:.0f}/s), statuses {dict(statuses)}, commits by pid {dict(by_pid)}, "
        f"response p50 {percentile(waits, 50) * 1000:.1f} ms p99 "
        f"{percentile(waits, 99) * 1000:.1f} ms max {waits[-1] * 1000:.1f} ms"
        + (f"\nfirst errors: {errors}" if errors else "")
    )


# -- one run -----------------------------------------------------------------------------------


def _summary(latencies: list[float]) -> str:
    if not latencies:
        return "no deliveries"
    latencies.sort()
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    return f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {latencies[-1] * 1000:6.1f} ms"


async def run(args: argparse.Namespace) -> int:
    """Start the servers and clients, make the mutations, print the figures; the exit code."""
    workdir = Path(tempfile.mkdtemp(prefix="processes-"))
    servers = ServerGroup(workdir, args.processes, args.separate)
    spawn = multiprocessing.get_context("spawn")
    clients: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    failed = False
    try:
        servers.start()
        token = servers.token
        ports = servers.ports
        shares = math.ceil(args.subscribers / args.per_client)
        started = time.monotonic()
        for n in range(shares):
            count = min(args.per_client, args.subscribers - n * args.per_client)
            ours, theirs = spawn.Pipe()
            process = spawn.Process(
                target=client_process, args=(theirs, ports, count, token, args.batch)
            )
            process.start()
            clients.append((process, ours))
        loop = asyncio.get_running_loop()
        by_pid: Counter[int | None] = Counter()
        for _, conn in clients:
            by_pid.update(await loop.run_in_executor(None, conn.recv))
        connect_s = time.monotonic() - started
        connected = sum(n for pid, n in by_pid.items() if pid is not None)
        rss = {p.pid: p.memory_info().rss / 2**20 for p in servers.serving_processes()}
        caller = Caller(ports[0], token)
        ticks: dict[int, tuple[int, int]] = {}  # tick id -> (version, committing pid)
        try:
            for _ in range(args.mutations):
                await asyncio.sleep(args.interval_ms / 1000)
                status, body = await caller.post("/api/mutation/ticks.add", b'{"args":{}}')
                if status != 200:
                    raise RuntimeError(f"ticks.add answered {status}: {body[:300]!r}")
                answer = json.loads(body)
                ticks[answer["value"]["id"]] = (answer["version"], answer["value"]["pid"])
        finally:
            caller.close()
        last_version = max(version for version, _ in ticks.values())
        deliveries: list[tuple[int | None, int, float]] = []
        without_last = 0
        for _, conn in clients:
            conn.send((last_version, max(ticks), args.timeout_s))
        for _, conn in clients:
            got, lacking = await loop.run_in_executor(None, conn.recv)
            deliveries += got
            without_last += lacking
        load = ""
        if args.write_connections:
            load = await write_load(ports, token, args.write_connections, args.write_s)
    finally:
        for process, _ in clients:
            process.join(30)
            if process.is_alive():
                process.kill()
        codes = servers.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    same: list[float] = []
    cross: list[float] = []
    for pid, tick_id, latency in deliveries:
        if tick_id in ticks:
            (same if pid == ticks[tick_id][1] else cross).append(latency)
    expected = connected * len(ticks)
    mode = "separate servers" if args.separate else f"serve --workers {args.processes}"
    print(
        f"{args.processes} processes ({mode}) on one file, {args.subscribers} subscribers in "
        f"{len(clients)} client processes, {args.mutations} commits every {args.interval_ms:g} ms "
        f"through one connection, {os.cpu_count()} CPUs"
    )
    spread = ", ".join(f"pid {pid}: {n}" for pid, n in sorted(by_pid.items(), key=str))
    print(f"subscribed {connected}/{args.subscribers} in {connect_s:.1f} s ({spread})")
    print("server RSS MB: " + ", ".join(f"pid {pid}: {mb:.0f}" for pid, mb in rss.items()))
    writers = Counter(pid for _, pid in ticks.values())
    print(f"commits by pid: {dict(writers)}")
    print(f"same-process  ({len(same):6d} deliveries): {_summary(same)}")
    print(f"cross-process ({len(cross):6d} deliveries): {_summary(cross)}")
    # A value stream sends the newest value: a commit that lands while the previous one is
    # still being fanned out is superseded for slow subscribers, never queued behind it.
    print(
        f"superseded {expected - len(same) - len(cross)} (a newer value was sent instead), "
        f"subscribers without the last commit {without_last}, server exit codes {codes}"
    )
    if load:
        print(load)
    failed = connected < args.subscribers or without_last > 0 or any(codes)
    failed = failed or "first errors" in load
    return 1 if failed else 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="server processes [2]")
    parser.add_argument("--subscribers", type=int, default=1000, help="SSE subscribers [1000]")
    parser.add_argument("--mutations", type=int, default=20, help="measured commits [20]")
    parser.add_argument("--interval-ms", type=float, default=150.0, help="between commits [150]")
    parser.add_argument(
        "--separate", action="store_true", help="P separate servers, not --workers P"
    )
    parser.add_argument(
        "--per-client", type=int, default=9000, help="subscribers per client process [9000]"
    )
    parser.add_argument("--batch", type=int, default=200, help="connections opened at a time")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="wait for the last commit")
    parser.add_argument(
        "--write-connections",
        type=int,
        default=0,
        help="afterwards, this many connections write at once, to show no write fails [0]",
    )
    parser.add_argument("--write-s", type=float, default=20.0, help="how long they write [20]")
    args = parser.parse_args(argv)
    if args.processes < 1 or args.subscribers < 1 or args.mutations < 1:
        parser.error("--processes, --subscribers and --mutations must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run once and print the figures."""
    args = parse_args(argv)
    raise_nofile_limit()  # the servers inherit it
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
