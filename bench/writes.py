"""Write throughput: small mutations/s through the HTTP API and the Store, and the batches seen.

Each row of the table is one bounded run (`--seconds`) of one small insert per mutation:

- http:   a real `python -m voicestack serve` child with `bench.writes_app`; N writers, each its
          own keep-alive httpx client, POST `/api/mutation/notes.add` back to back. The server's
          commits are `max(_changes.version)` after minus before (one version per commit that
          changed rows), so its mean batch is mutations / commits.
- store:  `Store.write` from N asyncio tasks in this process; the Writer's BatchStats give the
          commits and the histogram of batch sizes.
- apsw:   the same inserts by a bare apsw loop on one connection in WAL + synchronous=NORMAL,
          one transaction per insert (the physical limit of a commit on this disk and CPU), and
          all of them in one transaction (the cost of the insert alone).

The HTTP clients are plain httpx in this one process, which on a small machine costs more CPU per
request than the server does: the `cpu` column gives the server's CPU per mutation, from which
its own ceiling (one event loop, so about one core) can be read. Every run gets a fresh database
in a temporary directory (or `--dir`), removed afterwards.

    python -m bench.writes                          # 1, 10, 100 writers, 3 s per run
    python -m bench.writes --writers 1,10 --seconds 5 --skip-http
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import apsw
import httpx
import psutil

from bench.server_access import NO_LIMITS_ENV, auth_headers, server_token
from bench.writes_app import INSERT, MIGRATIONS
from voicestack.store.connection import open_connection
from voicestack.store.migrations import Migration
from voicestack.store.store import Store
from voicestack.store.write_jobs import BatchStats

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
APP = "bench.writes_app"
MUTATION = "notes.add"
BODY = "a small note of about forty bytes, no more"
SERVER_START_TIMEOUT_S = 30.0
SERVER_STOP_TIMEOUT_S = 20.0
WARMUP_MUTATIONS = 50


@dataclass
class Run:
    """One measured run: what went through, how it was batched, how long each write took."""

    path: str
    writers: int
    mutations: int
    seconds: float
    commits: int | None = None
    sizes: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    cpu: str = ""

    @property
    def rate(self) -> float:
        """Mutations per second."""
        return self.mutations / self.seconds

    def batch_summary(self) -> str:
        """Mean (and, with a histogram, p50 and max) mutations per commit."""
        if not self.commits:
            return "-"
        mean = f"{self.mutations / self.commits:.1f}"
        if not self.sizes:
            return mean
        ordered = sorted(self.sizes.items())
        half, seen, p50 = self.commits / 2, 0, 0
        for size, count in ordered:
            seen += count
            if seen >= half:
                p50 = size
                break
        return f"{mean} / {p50} / {ordered[-1][0]}"

    def latency_summary(self) -> str:
        """p50 and p99 of one write, in ms."""
        if len(self.latencies) < 2:
            return "-"
        q = statistics.quantiles(self.latencies, n=100, method="inclusive")
        return f"{q[49] * 1000:.2f} / {q[98] * 1000:.2f}"


# -- through the HTTP API ------------------------------------------------------------------------


class Server:
    """A `voicestack serve` child on a free loopback port, serving the bench app."""

    def __init__(self, workdir: Path) -> None:
        self.db = workdir / "writes.db"
        self.log_path = workdir / "server.log"
        config = workdir / "voicestack.toml"
        config.write_text("")  # never the repo's own config file
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        self.command = [
            *(sys.executable, "-m", "voicestack", "serve", "--host", HOST),
            *("--port", str(self.port), "--db", str(self.db), "--app", APP),
            *("--config", str(config), "--no-access-log", "--log-level", "warning"),
            "--embedding-model=",  # semantic memory off: the write path alone
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.token: str | None = None  # the first admin token, once started

    def start(self) -> None:
        """Start the server and wait until /healthz answers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICESTACK_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["VOICESTACK_LOAD_APPS"] = ""  # only the bench app
        env["VOICESTACK_LOAD_TOOLS"] = ""  # and no tool plugins
        env.update(NO_LIMITS_ENV)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited:\n{self.log_path.read_text()}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        self.token = server_token(self.db)
                        return
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not start in {SERVER_START_TIMEOUT_S} s")

    def cpu(self) -> float:
        """CPU seconds the server has used so far."""
        assert self.proc is not None
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def version(self) -> int:
        """The newest committed version, read from the file (one per commit that wrote rows)."""
        conn = apsw.Connection(str(self.db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            conn.set_busy_timeout(5000)
            return conn.execute("SELECT coalesce(max(version), 0) FROM _changes").fetchall()[0][0]
        finally:
            conn.close()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _post(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/api/mutation/{MUTATION}", json={"args": {"body": BODY}})
    response.raise_for_status()


async def _http_writer(client: httpx.AsyncClient, deadline: float, latencies: list[float]) -> int:
    done = 0
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        await _post(client)
        latencies.append(time.perf_counter() - started)
        done += 1
    return done


async def run_http(writers: int, seconds: float, workdir: Path) -> Run:
    """`writers` keep-alive clients posting the insert mutation for `seconds`."""
    server = Server(workdir)
    server.start()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    try:
        async with contextlib.AsyncExitStack() as stack:
            # Clients (an SSL context each, even for http://) and connections are made before
            # the clock starts: each writer's first request opens its keep-alive connection.
            clients = [
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=server.url,
                        timeout=30.0,
                        limits=limits,
                        headers=auth_headers(server.token),
                    )
                )
                for _ in range(writers)
            ]
            await asyncio.gather(*(_post(client) for client in clients))
            for _ in range(WARMUP_MUTATIONS):
                await _post(clients[0])
            before, cpu_before = server.version(), server.cpu()
            own_before = time.process_time()
            latencies: list[float] = []
            started = time.perf_counter()
            deadline = started + seconds
            counts = await asyncio.gather(
                *(_http_writer(client, deadline, latencies) for client in clients)
            )
            elapsed = time.perf_counter() - started
            commits = server.version() - before
            server_cpu_s = server.cpu() - cpu_before
            client_cpu = (time.process_time() - own_before) / elapsed
    finally:
        server.stop()
    return Run(
        "http",
        writers,
        sum(counts),
        elapsed,
        commits,
        latencies=latencies,
        # Server CPU per mutation says what one core of this machine could serve.
        cpu=f"server {server_cpu_s / elapsed:.0%} "
        f"({server_cpu_s / max(sum(counts), 1) * 1000:.2f} ms/mutation), client {client_cpu:.0%}",
    )


# -- through the Store, in process ---------------------------------------------------------------


def _insert(db: object) -> int:
    return db.execute(INSERT, (BODY,)).last_rowid  # type: ignore[attr-defined]


async def run_store(writers: int, seconds: float, workdir: Path) -> Run:
    """`writers` asyncio tasks awaiting `Store.write` of one insert each, for `seconds`."""
    store = Store(workdir / "store.db")
    store.migrate_app(APP, [Migration(f"m{i}", sql) for i, sql in enumerate(MIGRATIONS)])
    store.start()
    try:
        for _ in range(WARMUP_MUTATIONS):
            await store.write(_insert)
        stats = store.writer.stats
        commits0, sizes0 = stats.commits, dict(stats.sizes)
        latencies: list[float] = []
        cpu_before = time.process_time()
        started = time.perf_counter()
        deadline = started + seconds

        async def writer() -> int:
            done = 0
            while time.perf_counter() < deadline:
                begun = time.perf_counter()
                await store.write(_insert)
                latencies.append(time.perf_counter() - begun)
                done += 1
            return done

        counts = await asyncio.gather(*(writer() for _ in range(writers)))
        elapsed = time.perf_counter() - started
        cpu = (time.process_time() - cpu_before) / elapsed
        sizes = _histogram_since(stats, sizes0)
    finally:
        store.close()
    return Run(
        "store",
        writers,
        sum(counts),
        elapsed,
        stats.commits - commits0,
        sizes,
        latencies,
        f"process {cpu:.0%}",
    )


def _histogram_since(stats: BatchStats, before: dict[int, int]) -> dict[int, int]:
    return {
        size: count - before.get(size, 0)
        for size, count in stats.sizes.items()
        if count - before.get(size, 0) > 0
    }


# -- a bare apsw loop ----------------------------------------------------------------------------


def run_apsw(seconds: float, workdir: Path, *, one_transaction: bool) -> Run:
    """The same insert in a loop on one WAL + synchronous=NORMAL connection, for `seconds`."""
    conn = open_connection(workdir / ("apsw-one.db" if one_transaction else "apsw-each.db"))
    try:
        for sql in MIGRATIONS:
            conn.execute(sql)
        done = 0
        cpu_before = time.process_time()
        started = time.perf_counter()
        deadline = started + seconds
        if one_transaction:
            conn.execute("BEGIN IMMEDIATE")
        while True:
            for _ in range(100):
                if not one_transaction:
                    conn.execute("BEGIN IMMEDIATE")
                conn.execute(INSERT, (BODY,))
                if not one_transaction:
                    conn.execute("COMMIT")
            done += 100
            if time.perf_counter() >= deadline:
                break
        if one_transaction:
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        cpu = (time.process_time() - cpu_before) / elapsed
    finally:
        conn.close()
    label = "apsw, 1 txn total" if one_transaction else "apsw, 1 txn/insert"
    commits = 1 if one_transaction else done
    return Run(label, 1, done, elapsed, commits, cpu=f"process {cpu:.0%}")


# -- the table -----------------------------------------------------------------------------------


def print_table(runs: Sequence[Run]) -> None:
    """The results as a plain-text table."""
    header = (
        "path",
        "writers",
        "mutations/s",
        "mutations",
        "commits",
        "batch mean / p50 / max",
        "latency p50 / p99 ms",
        "cpu",
    )
    rows = [
        (
            run.path,
            str(run.writers),
            f"{run.rate:,.0f}",
            f"{run.mutations:,}",
            "-" if run.commits is None else f"{run.commits:,}",
            run.batch_summary(),
            run.latency_summary(),
            run.cpu,
        )
        for run in runs
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print("\ncommits by batch size (store runs; the Writer's BatchStats)")
    for run in runs:
        if run.sizes:
            shown = ", ".join(f"{label}: {count}" for label, count in _buckets(run.sizes))
            print(f"  {run.writers:>3} writers  {shown}")


def _buckets(sizes: dict[int, int]) -> list[tuple[str, int]]:
    """Commit counts by batch size, in power-of-two ranges: 1, 2-3, 4-7, ..."""
    counts: dict[int, int] = {}
    for size, count in sizes.items():
        low = 1 << (size.bit_length() - 1)
        counts[low] = counts.get(low, 0) + count
    return [
        (str(low) if low == 1 else f"{low}-{2 * low - 1}", count)
        for low, count in sorted(counts.items())
    ]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", default="1,10,100", help="concurrent writer counts")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go")
    parser.add_argument("--skip-http", action="store_true", help="no server runs")
    return parser.parse_args(argv)


async def main_async(args: argparse.Namespace) -> list[Run]:
    """Every run, in table order."""
    writer_counts = [int(n) for n in args.writers.split(",")]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="voicestack-writes-", dir=args.dir) as tmp:
        root = Path(tmp)
        steps: list[tuple[str, int]] = [("store", n) for n in writer_counts]
        if not args.skip_http:
            steps = [("http", n) for n in writer_counts] + steps
        for index, (path, writers) in enumerate(steps):
            workdir = root / f"run{index}"
            workdir.mkdir()
            run = run_http if path == "http" else run_store
            runs.append(await run(writers, args.seconds, workdir))
            print(f"  {path} x{writers}: {runs[-1].rate:,.0f} mutations/s", file=sys.stderr)
        for one in (False, True):
            workdir = root / f"apsw{int(one)}"
            workdir.mkdir()
            runs.append(run_apsw(args.seconds, workdir, one_transaction=one))
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    args = parse_args(argv)
    runs = asyncio.run(main_async(args))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nsmall inserts, {args.seconds:g} s per run, {os.cpu_count()} CPUs, load {load}")
    print_table(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
