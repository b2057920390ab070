"""Fan-out benchmark: N SSE subscribers on one query, M commits, commit-to-receive latency.

For each subscriber count it starts a fresh `python -m voicestack serve` on a loopback port with
a temporary database and the `bench.fanout_app` app, opens N `GET /api/watch/ticks.latest`
streams from this one process, checks that every stream got its initial value, then runs M
`ticks.add` mutations spaced `--interval-ms` apart. Each tick row carries `at`, the server's
`time.time()` just before its commit, so a subscriber's latency is its receive time minus `at`.

The client is deliberately lean so that it measures the server: raw asyncio protocols (uvloop
when installed), a hand-written request, and a `data_received` that only stamps and stores the
bytes. Chunked decoding, SSE parsing and JSON happen after the run.

    python bench/fanout.py --subscribers 100,1000,5000 --mutations 10
    python bench/fanout.py --subscribers 5000 -v --gc-stats          # per tick, server GC pauses
    python bench/fanout.py --subscribers 5000 --profile py-spy [--profile-native]
    python bench/fanout.py --subscribers 5000 --floor                # the machine's own floor
    python bench/fanout.py --subscribers 5000 --source /tmp/proto    # a prototype copy (A/B)

Only 127.0.0.1 is contacted; every wait is bounded and the server is always stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import ctypes
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import psutil

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
APP = "bench.fanout_app"
QUERY = "ticks.latest"
MUTATION = "ticks.add"
HOOK_DIR = Path(__file__).resolve().parent / "_serverhook"

SERVER_START_TIMEOUT_S = 30.0
SERVER_STOP_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 60.0  # per connection batch
HTTP_TIMEOUT_S = 30.0
SCAN_EVERY_S = 0.25


# -- the server process ------------------------------------------------------------------------


def raise_nofile_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (the server inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft, hard


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the bench dies, so no server is left behind."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)


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
        env["COLUMNS"] = "250"  # keep rich from wrapping the "serving http://..." line
        cmd = [
            sys.executable,
            "-m",
            "voicestack",
            "serve",
            "--host",
            HOST,
            "--port",
            "0",
            "--db",
            str(self.workdir / "fanout.db"),
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
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        pattern = re.compile(rb"http://127\.0\.0\.1:(\d+)")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log()}")
            match = pattern.search(self.log_path.read_bytes())
            if match:
                self.port = int(match.group(1))
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


# -- the lean SSE client -----------------------------------------------------------------------


class Tracker:
    """Counts subscribers that have seen a byte pattern; `done` is set when all have."""

    def __init__(self) -> None:
        self.remaining = 0
        self.failed = 0
        self.done = asyncio.Event()

    def expect(self, clients: Sequence[SseClient], pattern: bytes) -> None:
        """Wait for `pattern` on every client in `clients` (a new round)."""
        self.done.clear()
        self.remaining = len(clients)
        for client in clients:
            client.want = pattern
        for client in clients:
            client.scan()
        if self.remaining <= 0:
            self.done.set()

    def hit(self, failed: bool = False) -> None:
        """One client has seen the pattern (or has failed and never will)."""
        self.failed += failed
        self.remaining -= 1
        if self.remaining <= 0:
            self.done.set()


class SseClient(asyncio.Protocol):
    """One subscriber: sends the request, then only stamps and stores what arrives."""

    def __init__(self, request: bytes, tracker: Tracker) -> None:
        self.request = request
        self.tracker = tracker
        self.transport: asyncio.Transport | None = None
        self.reads: list[tuple[float, bytes]] = []
        self.want: bytes | None = None
        self.status = 0
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the GET request."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        """Stamp and keep the bytes; the only per-event work done while measuring."""
        self.reads.append((time.time(), data))
        if self.status == 0:
            self.status = _status(b"".join(d for _, d in self.reads))
            if self.status not in (0, 200):
                self._fail()
                return
        want = self.want
        if want is not None and want in data:
            self.want = None
            self.tracker.hit()

    def connection_lost(self, exc: Exception | None) -> None:
        """The server closed the stream: nothing more will come."""
        self.lost = True
        self._fail()

    def _fail(self) -> None:
        if self.want is not None:
            self.want = None
            self.tracker.hit(failed=True)

    def scan(self) -> None:
        """Look for the wanted pattern in the last two reads (it may straddle them).

        Cheap on purpose: it runs for every subscriber still waiting while events arrive.
        """
        if self.want is None:
            return
        if self.lost or self.status not in (0, 200):
            self._fail()
            return
        if self.want in b"".join(data for _, data in self.reads[-2:]):
            self.want = None
            self.tracker.hit()

    def close(self) -> None:
        """Drop the connection at once."""
        if self.transport is not None:
            self.transport.abort()


def _status(data: bytes) -> int:
    """The status code of a response head; 0 while too short to tell, -1 if not HTTP."""
    if len(data) < 12:
        return 0
    if data.startswith(b"HTTP/1.") and data[9:12].isdigit():
        return int(data[9:12])
    return -1


def watch_request(port: int) -> bytes:
    """The raw HTTP request of one subscriber."""
    return (
        f"GET /api/watch/{QUERY} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Accept: text/event-stream\r\nCache-Control: no-store\r\n\r\n"
    ).encode()


async def http_call(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request on a fresh `Connection: close` connection; returns (status, body)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), HTTP_TIMEOUT_S)
    try:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        raw = await asyncio.wait_for(reader.read(), HTTP_TIMEOUT_S)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        raise RuntimeError(f"{method} {path}: malformed response {raw[:200]!r}")
    payload = raw[head_end + 4 :]
    if b"transfer-encoding: chunked" in raw[:head_end].lower():
        payload = b"".join(_dechunk(payload, 0, len(payload))[0])
    return _status(raw), payload


def _dechunk(raw: bytes, pos: int, end: int) -> tuple[list[bytes], list[tuple[int, int]]]:
    """Split a chunked body into its chunks, with each chunk's (start, stop) offsets in `raw`."""
    parts: list[bytes] = []
    spans: list[tuple[int, int]] = []
    while pos < end:
        line_end = raw.find(b"\r\n", pos, end)
        if line_end < 0:
            break
        size = int(raw[pos:line_end].split(b";")[0], 16)
        if size == 0:
            break
        start = line_end + 2
        stop = min(start + size, end)
        parts.append(raw[start:stop])
        spans.append((start, stop))
        pos = start + size + 2
    return parts, spans


# -- after the run: parse what each subscriber received ----------------------------------------


@dataclass(slots=True)
class Event:
    """One SSE `value` event as a subscriber received it."""

    received: float
    version: int
    value: Any


def parse_stream(reads: Sequence[tuple[float, bytes]]) -> tuple[int, list[Event]]:
    """(HTTP status, value events) of one subscriber, each stamped when its last byte came."""
    if not reads:
        return 0, []
    raw = b"".join(data for _, data in reads)
    ends: list[int] = []
    total = 0
    for _, data in reads:
        total += len(data)
        ends.append(total)
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        return _status(raw), []
    _, spans = _dechunk(raw, head_end + 4, len(raw))
    events: list[Event] = []
    pending = b""
    for start, stop in spans:
        combined = pending + raw[start:stop]
        offset = start - len(pending)  # raw offset of combined[i] for i >= len(pending)
        pos = 0
        while (sep := combined.find(b"\n\n", pos)) >= 0:
            last_byte = offset + sep + 1
            received = reads[bisect.bisect_right(ends, last_byte)][0]
            event = _parse_event(combined[pos:sep], received)
            if event is not None:
                events.append(event)
            pos = sep + 2
        pending = combined[pos:]
    return _status(raw), events


def _parse_event(block: bytes, received: float) -> Event | None:
    kind = b"message"
    data = None
    for line in block.split(b"\n"):
        if line.startswith(b"event:"):
            kind = line[6:].strip()
        elif line.startswith(b"data:"):
            data = line[5:].strip()
    if kind != b"value" or data is None:
        return None  # pings and anything else
    body = json.loads(data)
    return Event(received, body["version"], body["value"])


# -- one run -----------------------------------------------------------------------------------


@dataclass
class Tick:
    """One mutation the bench made: row id, commit-time stamp, commit version, send window."""

    id: int
    at: float
    version: int
    sent: float
    answered: float


@dataclass
class RunResult:
    """The figures of one run (one subscriber count)."""

    subscribers: int
    mutations: int
    interval_ms: float
    samples: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    full_fanout_p50_ms: float = 0.0  # per tick: time until its last subscriber had it
    full_fanout_max_ms: float = 0.0
    events_per_s: float = 0.0  # delivered events over the mutation phase
    burst_events_per_s: float = 0.0  # per tick: subscribers / full fan-out time (median)
    missing: int = 0
    duplicated: int = 0
    unexpected: int = 0
    connect_s: float = 0.0
    rss_before_mb: float = 0.0
    rss_subscribed_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_per_subscriber_kb: float = 0.0
    server_cpu_us_per_event: float = 0.0
    client_cpu_us_per_event: float = 0.0
    mutation_ms_p50: float = 0.0
    failed_subscribers: int = 0
    profile: str | None = None
    gc_stats_file: str | None = None
    gc: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # per tick: [id, first receive ms, median ms, last receive ms, subscribers that got it]
    per_tick: list[list[float]] = field(default_factory=list)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _connect(
    port: int, count: int, batch: int, tracker: Tracker, result: RunResult
) -> list[SseClient]:
    loop = asyncio.get_running_loop()
    request = watch_request(port)
    clients: list[SseClient] = []
    for first in range(0, count, batch):
        size = min(batch, count - first)
        fresh = [SseClient(request, tracker) for _ in range(size)]
        tracker.expect(fresh, b"\n\n")  # the end of the initial value event
        opened = await asyncio.gather(
            *(
                asyncio.wait_for(loop.create_connection(lambda c=c: c, HOST, port), HTTP_TIMEOUT_S)
                for c in fresh
            ),
            return_exceptions=True,
        )
        errors = [o for o in opened if isinstance(o, BaseException)]
        for client, outcome in zip(fresh, opened, strict=True):
            if isinstance(outcome, BaseException):
                client.lost = True
                client.scan()
        clients.extend(fresh)
        await _wait(tracker, READY_TIMEOUT_S, fresh)
        if tracker.remaining > 0 or tracker.failed or errors:
            detail = f"{errors[0]!r}" if errors else ""
            raise RuntimeError(
                f"subscribers {first}..{first + size}: {tracker.remaining} without an initial "
                f"event, {tracker.failed} failed {detail}"
            )
    result.failed_subscribers = tracker.failed
    return clients


async def _wait(tracker: Tracker, timeout: float, clients: Sequence[SseClient] = ()) -> bool:
    """Wait until the tracker's round is done or `timeout`; rescans for split patterns."""
    deadline = time.monotonic() + timeout
    while not tracker.done.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tracker.done.wait(), min(SCAN_EVERY_S, remaining))
        if not tracker.done.is_set():
            for client in clients:
                client.scan()
    return True


async def _mutate(port: int) -> Tick:
    sent = time.time()
    status, body = await http_call(port, "POST", f"/api/mutation/{MUTATION}", b'{"args":{}}')
    answered = time.time()
    if status != 200:
        raise RuntimeError(f"{MUTATION} answered {status}: {body[:300]!r}")
    data = json.loads(body)
    return Tick(data["value"]["id"], data["value"]["at"], data["version"], sent, answered)


class Profiler:
    """Profiles the server over the measured window: py-spy from outside, or the in-process
    hooks (cProfile, GC log) switched on and off by SIGUSR1/SIGUSR2."""

    def __init__(self, server: Server, args: argparse.Namespace, pyspy_out: Path | None) -> None:
        self.server = server
        self.args = args
        self.pyspy_out = pyspy_out
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Any = None

    def start(self) -> None:
        """Begin the measured window."""
        if self.server.hook_env:
            self.server.signal(signal.SIGUSR1)
            time.sleep(0.2)
        if self.pyspy_out is not None:
            exe = shutil.which("py-spy")
            if exe is None:
                raise RuntimeError("py-spy is not installed: pip install py-spy")
            cmd = [
                exe,
                "record",
                "--pid",
                str(self.server.pid),
                "--rate",
                str(self.args.profile_rate),
                # --native must pause the process to unwind C stacks; the default does not.
                *(["--native"] if self.args.profile_native else ["--nonblocking"]),
                "--threads",
                "--format",
                "raw",
                "--output",
                str(self.pyspy_out),
            ]
            self.log = self.pyspy_out.with_suffix(".log").open("wb")
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log
            )
            time.sleep(0.5)  # let it attach before the first commit

    def stop(self) -> None:
        """End the window; the output files are written when this returns."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.log.close()
            if self.pyspy_out is not None and not self.pyspy_out.exists():
                log = self.pyspy_out.with_suffix(".log").read_text(errors="replace")[-2000:]
                print(f"py-spy wrote no profile:\n{log}", file=sys.stderr)
        if self.server.hook_env:
            self.server.signal(signal.SIGUSR2)
            files = [Path(f) for f in self.server.hook_env.values()]
            deadline = time.monotonic() + 30
            while not all(f.exists() for f in files) and time.monotonic() < deadline:
                time.sleep(0.1)


async def run_once(subscribers: int, args: argparse.Namespace) -> RunResult:
    """Start a server, subscribe `subscribers` streams, run the mutations, measure, clean up."""
    result = RunResult(subscribers, args.mutations, args.interval_ms)
    workdir = Path(tempfile.mkdtemp(prefix=f"fanout-{subscribers}-"))
    hook_env: dict[str, str] = {}
    pyspy_out: Path | None = None
    if args.profile != "none" or args.gc_stats:
        out_dir = Path(args.profile_dir).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        if args.profile == "py-spy":
            pyspy_out = out_dir / f"fanout-{subscribers}.pyspy.txt"
            pyspy_out.unlink(missing_ok=True)
            result.profile = str(pyspy_out)
        elif args.profile == "cprofile":
            out = out_dir / f"fanout-{subscribers}.pstats"
            out.unlink(missing_ok=True)
            hook_env["VOICESTACK_BENCH_CPROFILE"] = result.profile = str(out)
        if args.gc_stats:
            out = out_dir / f"fanout-{subscribers}.gc.json"
            out.unlink(missing_ok=True)
            hook_env["VOICESTACK_BENCH_GCSTATS"] = result.gc_stats_file = str(out)
    server = Server(workdir, Path(args.source).resolve(), hook_env, floor=args.floor)
    clients: list[SseClient] = []
    tracker = Tracker()
    try:
        server.start()
        status, body = await http_call(server.port, "GET", "/healthz")
        if status != 200:
            raise RuntimeError(f"/healthz answered {status}: {body!r}")
        result.rss_before_mb = server.rss() / 2**20

        t0 = time.monotonic()
        clients = await _connect(server.port, subscribers, args.batch, tracker, result)
        result.connect_s = time.monotonic() - t0
        await asyncio.sleep(args.settle_s)  # let the server finish its join batches
        result.rss_subscribed_mb = server.rss() / 2**20

        profiler = Profiler(server, args, pyspy_out)
        profiler.start()
        interval = args.interval_ms / 1000
        ticks: list[Tick] = []
        cpu_server, cpu_client = server.cpu(), _client_cpu()
        try:
            start = time.monotonic()
            for k in range(args.warmup + args.mutations):
                await asyncio.sleep(max(0.0, start + k * interval - time.monotonic()))
                ticks.append(await _mutate(server.port))
            await asyncio.sleep(interval)
            tracker.expect(clients, b"\nid: %d\n" % ticks[-1].version)
            delivered = await _wait(tracker, args.timeout_s, clients)
            cpu_server = server.cpu() - cpu_server
            cpu_client = _client_cpu() - cpu_client
        finally:
            profiler.stop()
        if not delivered:
            result.notes.append(
                f"{tracker.remaining} subscribers lacked the last tick after {args.timeout_s} s"
            )
        result.rss_end_mb = server.rss() / 2**20
        result.rss_per_subscriber_kb = (
            (result.rss_end_mb - result.rss_before_mb) * 1024 / max(1, subscribers)
        )
    finally:
        for client in clients:
            client.close()
        await asyncio.sleep(0)
        code = server.stop()
        if code not in (0, None, -signal.SIGTERM):
            result.notes.append(f"server exited with {code}")
        shutil.rmtree(workdir, ignore_errors=True)

    _analyze(result, clients, ticks[args.warmup :], ticks[: args.warmup])
    if result.gc_stats_file and Path(result.gc_stats_file).exists():
        result.gc = summarize_gc(Path(result.gc_stats_file))
    events = result.samples + result.duplicated + result.unexpected
    result.server_cpu_us_per_event = cpu_server * 1e6 / max(1, events)
    result.client_cpu_us_per_event = cpu_client * 1e6 / max(1, events)
    return result


def _analyze(
    result: RunResult, clients: Sequence[SseClient], ticks: Sequence[Tick], warmup: Iterable[Tick]
) -> None:
    by_id = {tick.id: tick for tick in ticks}
    skip = {tick.id for tick in warmup}
    latencies: list[float] = []
    per_tick: dict[int, list[float]] = {tick.id: [] for tick in ticks}
    for client in clients:
        status, events = parse_stream(client.reads)
        if status != 200 or not events:
            result.failed_subscribers += 1
            result.missing += len(ticks)
            continue
        seen: Counter[int] = Counter()
        for event in events[1:]:  # events[0] is the initial value
            tick_id = event.value["id"] if isinstance(event.value, dict) else None
            if tick_id in skip:
                continue
            tick = by_id.get(tick_id) if tick_id is not None else None
            if tick is None:
                result.unexpected += 1
                continue
            seen[tick.id] += 1
            if seen[tick.id] == 1:
                latency = event.received - tick.at
                latencies.append(latency)
                per_tick[tick.id].append(event.received)
        result.missing += sum(1 for tick in ticks if seen[tick.id] == 0)
        result.duplicated += sum(count - 1 for count in seen.values() if count > 1)
    latencies.sort()
    result.samples = len(latencies)
    result.p50_ms = percentile(latencies, 50) * 1000
    result.p99_ms = percentile(latencies, 99) * 1000
    result.max_ms = (latencies[-1] if latencies else 0.0) * 1000
    for tick in ticks:
        got = sorted(per_tick[tick.id])
        if got:
            result.per_tick.append(
                [
                    tick.id,
                    round((got[0] - tick.at) * 1000, 2),
                    round((percentile(got, 50) - tick.at) * 1000, 2),
                    round((got[-1] - tick.at) * 1000, 2),
                    len(got),
                ]
            )
    full = sorted(max(times) - by_id[i].at for i, times in per_tick.items() if times)
    result.full_fanout_p50_ms = percentile(full, 50) * 1000
    result.full_fanout_max_ms = (full[-1] if full else 0.0) * 1000
    rates = sorted(
        len(times) / max(1e-6, max(times) - by_id[i].at) for i, times in per_tick.items() if times
    )
    result.burst_events_per_s = percentile(rates, 50)
    received = [t for times in per_tick.values() for t in times]
    if ticks and received:
        span = max(received) - min(tick.at for tick in ticks)
        result.events_per_s = len(received) / max(1e-6, span)
    mutation_ms = sorted((tick.answered - tick.sent) * 1000 for tick in ticks)
    result.mutation_ms_p50 = percentile(mutation_ms, 50)


# -- reporting ---------------------------------------------------------------------------------


def summarize_gc(path: Path) -> dict[str, Any]:
    """Count, total and longest pause per generation from the server hook's GC log."""
    data = json.loads(path.read_text())
    summary: dict[str, Any] = {"tracked_objects": data["tracked_objects"]}
    for generation in (0, 1, 2):
        pauses = [ms for gen, ms, _ in data["collections"] if gen == generation]
        summary[f"gen{generation}"] = {
            "count": len(pauses),
            "total_ms": round(sum(pauses), 1),
            "max_ms": round(max(pauses, default=0.0), 1),
        }
    return summary


# Stages of the event loop thread's time, checked in order against a sample's stack.
_WHOLE_STACK_STAGES = [
    ("garbage collector", ("gc_collect",)),
    ("socket write (send syscall)", ("write (libc", "uv_try_write", "UVStream__exec_write")),
    ("idle (epoll wait)", ("epoll_wait", "epoll_pwait")),
]
_INNERMOST_STAGES = [
    ("hub.py: _apply (fan-out loop)", ("reactive/hub.py",)),
    ("channel.py: push, next_chunk, render", ("reactive/channel.py",)),
    ("sse: ChannelResponse loop", ("http/sse.py",)),
    ("starlette: send wrappers", ("_exception_handler.py", "middleware/errors.py")),
    ("uvicorn: send (chunk framing)", ("httptools_impl.py:5", "httptools_impl.py:4")),
    ("uvicorn: other", ("httptools_impl.py", "h11_impl.py", "flow_control.py")),
    ("starlette: routing/request", ("starlette/",)),
    ("asyncio/uvloop: task steps, callbacks", ("asyncio", "uvloop", "loop.c", "Runner.run")),
]


def _stage(frames: Sequence[str]) -> str:
    for name, needles in _WHOLE_STACK_STAGES:
        if any(needle in frame for frame in frames for needle in needles):
            return name
    for frame in reversed(frames):
        if ".py:" not in frame and "loop.c" not in frame:
            continue  # native frames without a clue: attribute to the nearest Python frame
        for name, needles in _INNERMOST_STAGES:
            if any(needle in frame for needle in needles):
                return name
        return "other: " + frame[:90]
    return "other (native): " + frames[-1][:80]


def summarize_pyspy(path: Path, events: int, top: int = 20) -> str:
    """Break a py-spy raw profile down into fan-out stages of the event loop thread."""
    stages: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread") else "?"
        if frames[0].startswith("thread") and thread != "MainThread":
            waiting = any("acquire_lock" in f or "_queue_SimpleQueue_get" in f for f in frames)
            threads[thread + (" (waiting)" if waiting else "")] += count
            continue
        threads["MainThread"] += count
        total += count
        stages[_stage(frames)] += count
        leaf[frames[-1]] += count
    busy = total - stages["idle (epoll wait)"]
    lines = [
        f"py-spy samples on the event loop thread: {total} ({busy} busy), "
        f"{events} events delivered",
        "stages (% of busy samples):",
    ]
    for name, count in stages.most_common():
        if name != "idle (epoll wait)":
            lines.append(f"  {100 * count / max(1, busy):5.1f}%  {name}")
    lines.append("leaf frames (% of busy samples):")
    for name, count in leaf.most_common(top):
        if "epoll" not in name:
            lines.append(f"  {100 * count / max(1, busy):5.1f}%  {name[:110]}")
    lines.append("samples per thread: " + ", ".join(f"{k} {v}" for k, v in threads.most_common()))
    return "\n".join(lines)


def summarize_cprofile(path: Path, events: int, top: int = 30) -> str:
    """The top functions of a cProfile dump by own time, with microseconds per delivered event."""
    import pstats

    stats = pstats.Stats(str(path))
    rows = []
    for (file, line, name), (_cc, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((tottime, cumtime, calls, f"{Path(file).name}:{line}({name})"))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    lines = [f"cProfile: {total:.3f} s on the event loop thread, {events} events"]
    lines.append("   own us/ev   cum us/ev      calls  function")
    for tottime, cumtime, calls, label in rows[:top]:
        lines.append(
            f"  {tottime * 1e6 / max(1, events):10.2f} {cumtime * 1e6 / max(1, events):11.2f}"
            f" {calls:10d}  {label}"
        )
    return "\n".join(lines)


def format_table(results: Sequence[RunResult], verbose: bool = False) -> str:
    """The human-readable figures table."""
    header = (
        f"{'N':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'full p50':>9} {'events/s':>9} "
        f"{'burst ev/s':>10} {'miss/dup':>9} {'RSS MB before→end':>18} {'KB/sub':>7} "
        f"{'srv us/ev':>9} {'cli us/ev':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        rss = f"{r.rss_before_mb:.1f}→{r.rss_end_mb:.1f}"
        lines.append(
            f"{r.subscribers:>6} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f} {r.max_ms:>8.1f} "
            f"{r.full_fanout_p50_ms:>9.1f} {r.events_per_s:>9.0f} {r.burst_events_per_s:>10.0f} "
            f"{f'{r.missing}/{r.duplicated}':>9} {rss:>18} {r.rss_per_subscriber_kb:>7.1f} "
            f"{r.server_cpu_us_per_event:>9.1f} {r.client_cpu_us_per_event:>9.1f}"
        )
        if verbose:
            ticks = " ".join(f"{t[1]:.0f}/{t[2]:.0f}/{t[3]:.0f}" for t in r.per_tick)
            lines.append(f"       per tick first/median/last ms: {ticks}")
        if r.gc:
            gens = ", ".join(
                f"gen{g} {r.gc[f'gen{g}']['count']}x {r.gc[f'gen{g}']['total_ms']} ms "
                f"(max {r.gc[f'gen{g}']['max_ms']})"
                for g in (0, 1, 2)
            )
            lines.append(f"       server GC: {gens}; {r.gc['tracked_objects']} tracked objects")
        for note in r.notes:
            lines.append(f"       note: {note}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--subscribers",
        default="100,1000,5000",
        help="comma-separated subscriber counts, one fresh server each [100,1000,5000]",
    )
    parser.add_argument("--mutations", type=int, default=10, help="measured commits [10]")
    parser.add_argument(
        "--interval-ms", type=float, default=150.0, help="time between commits [150]"
    )
    parser.add_argument("--warmup", type=int, default=0, help="unmeasured commits first [0]")
    parser.add_argument("--batch", type=int, default=200, help="connections opened at a time [200]")
    parser.add_argument("--settle-s", type=float, default=0.5, help="pause after subscribing [0.5]")
    parser.add_argument(
        "--timeout-s", type=float, default=60.0, help="wait for the last tick at most [60]"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes (reserved: only 1 for now)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("-v", "--verbose", action="store_true", help="show per-tick latencies")
    parser.add_argument(
        "--profile", choices=["none", "py-spy", "cprofile"], default="none",
        help="profile the server during the mutations [none]",
    )  # fmt: skip
    parser.add_argument(
        "--gc-stats", action="store_true", help="log the server's garbage collections"
    )
    parser.add_argument(
        "--profile-dir",
        default=str(Path(tempfile.gettempdir()) / "voicestack-fanout"),
        help="profile and GC log folder",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="run against bench/fanout_floor.py, the minimal fan-out server, to see what the "
        "machine and this client cost on their own",
    )
    parser.add_argument(
        "--source",
        default=str(REPO),
        help="source tree the server runs from, e.g. a scratch copy with a prototype [this repo]",
    )
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples/s [250]")
    parser.add_argument(
        "--profile-native", action="store_true", help="py-spy --native (C frames too)"
    )
    parser.add_argument("--no-uvloop", action="store_true", help="client on plain asyncio")
    args = parser.parse_args(argv)
    try:
        args.counts = [int(part) for part in args.subscribers.split(",") if part.strip()]
    except ValueError:
        parser.error("--subscribers takes comma-separated integers, e.g. 100,1000,5000")
    if not args.counts or min(args.counts) < 1:
        parser.error("--subscribers needs positive counts")
    if args.mutations < 1:
        parser.error("--mutations must be at least 1")
    if args.workers != 1:
        parser.error("--workers is reserved: the server has no multi-process mode yet")
    return args


async def _main(args: argparse.Namespace) -> list[RunResult]:
    loop = asyncio.get_running_loop()
    errors: list[str] = []

    def on_error(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # An exception in a protocol callback would otherwise only be logged, and the run would
        # look like a slow server.
        errors.append(f"{context.get('message')}: {context.get('exception')!r}")
        loop.default_exception_handler(context)

    loop.set_exception_handler(on_error)
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)  # stop the server on SIGTERM too
    results = []
    for count in args.counts:
        if not args.json:
            print(f"running N={count} ...", file=sys.stderr, flush=True)
        result = await run_once(count, args)
        result.notes.extend(f"client error: {e}" for e in errors)
        errors.clear()
        results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run every requested subscriber count and print the figures."""
    args = parse_args(argv)
    soft, hard = raise_nofile_limit()
    needed = max(args.counts) + 100
    if soft < needed:
        print(f"RLIMIT_NOFILE is {soft} (hard {hard}): too few for {needed}", file=sys.stderr)
        return 2
    loop_factory = None
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        results = runner.run(_main(args))
    events_by_n = {r.subscribers: r.samples + r.duplicated + r.unexpected for r in results}
    summaries = {}
    for r in results:
        if r.profile and Path(r.profile).exists():
            path = Path(r.profile)
            summaries[r.subscribers] = (
                summarize_pyspy(path, events_by_n[r.subscribers])
                if args.profile == "py-spy"
                else summarize_cprofile(path, events_by_n[r.subscribers])
            )
    if args.json:
        doc = {
            "config": {
                "mutations": args.mutations,
                "interval_ms": args.interval_ms,
                "warmup": args.warmup,
                "batch": args.batch,
                "client_loop": "uvloop" if loop_factory else "asyncio",
                "nofile": soft,
                "cpus": os.cpu_count(),
            },
            "results": [asdict(r) for r in results],
        }
        print(json.dumps(doc, indent=2))
    else:
        client = "uvloop" if loop_factory else "asyncio"
        print(
            f"fan-out: {args.mutations} commits every {args.interval_ms:g} ms, one query, "
            f"client on {client}, RLIMIT_NOFILE {soft}"
        )
        print(format_table(results, args.verbose))
        for n, text in summaries.items():
            print(f"\n== profile N={n} ==\n{text}")
    failed = any(r.failed_subscribers or r.notes for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
