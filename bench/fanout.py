"""Fan-out benchmark: N SSE subscribers on one query, M commits, commit-to-receive latency.

For each subscriber count it starts a fresh `python -m voicestack serve` on a loopback port with
a temporary database and the `bench.fanout_app` app, opens N `GET /api/watch/ticks.latest`
streams from this one process, checks that every stream got its initial value, then runs M
`ticks.add` mutations spaced `--interval-ms` apart. Each tick row carries `at`, the server's
`time.time()` just before its commit, so a subscriber's latency is its receive time minus `at`.

The client is deliberately lean so that it measures the server: raw asyncio protocols (uvloop
when installed), a hand-written request, and a `data_received` that only stamps and stores the
bytes. Chunked decoding, SSE parsing and JSON happen after the run.

    python -m bench.fanout --subscribers 100,1000,5000 --mutations 10
    python -m bench.fanout --subscribers 5000 -v --gc-stats          # per tick, server GC pauses
    python -m bench.fanout --subscribers 5000 --profile py-spy [--profile-native]
    python -m bench.fanout --subscribers 5000 --floor                # the machine's own floor
    python -m bench.fanout --subscribers 5000 --source /tmp/proto    # a prototype copy (A/B)

Only 127.0.0.1 is contacted; every wait is bounded and the server is always stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bench.fanout_profile import Profiler, summarize_cprofile, summarize_gc, summarize_pyspy
from bench.fanout_report import RunResult, Tick, analyze, format_table
from bench.fanout_server import (
    REPO,
    Server,
)
from bench.server_access import auth_line
from bench.sse_client import (
    HOST,
    HTTP_TIMEOUT_S,
    SseClient,
    Tracker,
    http_call,
    raise_nofile_limit,
    wait_ready,
    watch_loop_errors,
)

QUERY = "ticks.latest"
MUTATION = "ticks.add"

READY_TIMEOUT_S = 60.0  # per connection batch


# -- the server process ------------------------------------------------------------------------


# -- the lean SSE client -----------------------------------------------------------------------


def watch_request(port: int, token: str | None) -> bytes:
    """The raw HTTP request of one subscriber, with the server's token."""
    return (
        f"GET /api/watch/{QUERY} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{auth_line(token)}"
        "Accept: text/event-stream\r\nCache-Control: no-store\r\n\r\n"
    ).encode()


# -- after the run: parse what each subscriber received ----------------------------------------


# -- one run -----------------------------------------------------------------------------------


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _connect(
    server: Server, count: int, batch: int, tracker: Tracker, result: RunResult
) -> list[SseClient]:
    loop = asyncio.get_running_loop()
    port = server.port
    request = watch_request(port, server.token)
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
        await wait_ready(tracker, READY_TIMEOUT_S, fresh)
        if tracker.remaining > 0 or tracker.failed or errors:
            detail = f"{errors[0]!r}" if errors else ""
            raise RuntimeError(
                f"subscribers {first}..{first + size}: {tracker.remaining} without an initial "
                f"event, {tracker.failed} failed {detail}"
            )
    result.failed_subscribers = tracker.failed
    return clients


async def _mutate(server: Server) -> Tick:
    sent = time.time()
    path = f"/api/mutation/{MUTATION}"
    status, body = await http_call(server.port, "POST", path, b'{"args":{}}', server.token)
    answered = time.time()
    if status != 200:
        raise RuntimeError(f"{MUTATION} answered {status}: {body[:300]!r}")
    data = json.loads(body)
    return Tick(data["value"]["id"], data["value"]["at"], data["version"], sent, answered)


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
        clients = await _connect(server, subscribers, args.batch, tracker, result)
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
                ticks.append(await _mutate(server))
            await asyncio.sleep(interval)
            tracker.expect(clients, b"\nid: %d\n" % ticks[-1].version)
            delivered = await wait_ready(tracker, args.timeout_s, clients)
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

    analyze(result, clients, ticks[args.warmup :], ticks[: args.warmup])
    if result.gc_stats_file and Path(result.gc_stats_file).exists():
        result.gc = summarize_gc(Path(result.gc_stats_file))
    events = result.samples + result.duplicated + result.unexpected
    result.server_cpu_us_per_event = cpu_server * 1e6 / max(1, events)
    result.client_cpu_us_per_event = cpu_client * 1e6 / max(1, events)
    return result


# -- reporting ---------------------------------------------------------------------------------


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
    errors = watch_loop_errors()
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
