"""Streaming benchmark: K concurrent replies at T tokens/s, S feed subscribers per thread.

Each run starts two child processes on loopback ports: the fake OpenAI provider
(`python -m voicestack.testing.fake_openai`, scripted to answer every chat request with the same
N-token reply paced at T tokens/s) and `python -m voicestack serve` pointed at it with a fresh
database and `--flush-ms`. The bench then creates K threads, opens S `GET /api/threads/{id}/events`
feeds per thread (the lean raw-asyncio client of bench/fanout.py), waits for every `ready`,
posts one message to every thread and waits until every feed has the finished reply.

It prints, per run:

- commits/s: `_changes` versions committed in the window (POSTs sent → last feed done), with
  deltas per commit (group-commit batch size as the change log records it);
- CPU of each process (server, fake provider, this client) as % of one core (psutil cpu_times
  delta / wall), and the server's event-loop thread on its own;
- commit→receive: for every delta event at every subscriber, receive time minus the
  `_changes.committed_at` of the commit that wrote it (joined by thread_events id after the run);
- token emit→commit (coalescing + provider ingest + group commit) and emit→receive (end to
  end), from the fake's request time and its pacing; see bench/stream_report.py for the method;
- bytes per subscriber ÷ reply bytes: raw bytes a feed received after `ready` (events, pings and
  HTTP chunk framing) divided by the reply's UTF-8 length, with its parts.

    python -m bench.stream --replies 100,1000 --subscribers 1 --tokens-per-s 50 --tokens 200
    python -m bench.stream --replies 100 --subscribers 3 --repeat 2 --quiet-wait-s 300
    python -m bench.stream --replies 1000 --profile --profile-dir /tmp/stream-prof
    python -m bench.stream --replies 100 --source /tmp/proto   # a scratch copy with a prototype

On a shared machine, `--quiet-wait-s` waits (bounded) for other processes to calm down before
each measured window; the table's other% column says how busy the rest of the machine was.
RLIMIT_NOFILE is raised to its hard limit (the children inherit it). Only 127.0.0.1 is
contacted; every wait is bounded and both children are always stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.server_access import server_token
from bench.sse_client import SseClient, Tracker, raise_nofile_limit, wait_ready, watch_loop_errors
from bench.stream_procs import (
    REPO,
    Child,
    PySpy,
    Usage,
    start_fake,
    start_server,
    thread_names,
    wait_for_quiet,
)
from bench.stream_profile import summarize_pyspy
from bench.stream_report import FeedStream, Figures, compute, parse_feed, read_database
from bench.stream_workload import (
    USER_TEXT,
    bounded,
    connect_feeds,
    create_threads,
    done_pattern,
    fetch_request_times,
    post_json,
    reply_text,
)
from voicestack.testing.fake_openai.chat import split_text


@dataclass
class RunResult:
    """The configuration and figures of one run."""

    replies: int
    subscribers: int
    tokens_per_s: float
    tokens: int
    flush_ms: float
    reply_bytes: int = 0
    window_s: float = 0.0
    posts_s: float = 0.0  # time to post every message (the replies' start spread)
    server_cpu_pct: float = 0.0
    server_loop_pct: float = 0.0  # the main thread (event loop) alone
    server_threads_pct: dict[str, float] = field(default_factory=dict)
    fake_cpu_pct: float = 0.0
    client_cpu_pct: float = 0.0
    others_cpu_pct: float = 0.0  # every other process on the machine during the window
    server_us_per_token: float = 0.0  # server CPU per streamed token: the capacity figure
    loadavg_before: float = 0.0
    figures: Figures = field(default_factory=Figures)
    timed_out: bool = False
    profile: str | None = None
    notes: list[str] = field(default_factory=list)


def _pct(seconds: float, wall: float) -> float:
    return 100 * seconds / max(1e-9, wall)


async def run_once(replies: int, subscribers: int, args: argparse.Namespace) -> RunResult:
    """One fresh fake + server, K threads with S feeds each, one reply per thread, measured."""
    result = RunResult(replies, subscribers, args.tokens_per_s, args.tokens, args.flush_ms)
    text = reply_text(args.tokens)
    pieces = split_text(text)
    result.reply_bytes = len(text.encode())
    workdir = Path(tempfile.mkdtemp(prefix=f"stream-{replies}x{subscribers}-"))
    source = Path(args.source).resolve()
    fake: Child | None = None
    server: Child | None = None
    clients: list[SseClient] = []
    profiler: PySpy | None = None
    try:
        fake, fake_port = start_fake(workdir, source)
        plan = {"text": text, "tokens_per_second": args.tokens_per_s, "times": None}
        await post_json(fake_port, "/_control/script", plan, expect=200)
        server, port, db = start_server(workdir, source, fake_port, args)
        token = server_token(db)
        thread_ids = await create_threads(port, token, replies)
        tracker = Tracker()
        feeds = await connect_feeds(port, token, thread_ids, subscribers, args.batch, tracker)
        clients = [c for group in feeds.values() for c in group]
        await asyncio.sleep(args.settle_s)
        if args.quiet_wait_s > 0:
            await wait_for_quiet(args.quiet_below, args.quiet_wait_s)
        if args.profile:
            out_dir = Path(args.profile_dir).resolve()
            out_dir.mkdir(parents=True, exist_ok=True)
            profile = out_dir / f"stream-{replies}x{subscribers}.pyspy.txt"
            profiler = PySpy(server.pid, profile, args.profile_rate, args.profile_gil)
            profiler.start()
            result.profile = str(profile)
        result.loadavg_before = os.getloadavg()[0]
        tracker.expect(clients, done_pattern(text))
        before = Usage.take(server, fake)
        posts = [
            post_json(
                port,
                f"/api/threads/{t}/messages",
                {"text": USER_TEXT.format(index=i)},
                token=token,
            )
            for i, t in enumerate(thread_ids)
        ]
        await bounded(posts, args.post_concurrency)
        result.posts_s = time.time() - before.wall
        nominal = args.tokens / args.tokens_per_s
        timeout = args.timeout_s or max(60.0, 4 * nominal + 30)
        result.timed_out = not await wait_ready(tracker, timeout, clients)
        after = Usage.take(server, fake)
        if profiler is not None:
            profiler.stop()
        names = thread_names(server.pid) if args.profile or args.thread_names else {}
        wall = after.wall - before.wall
        result.window_s = wall
        result.server_cpu_pct = _pct(after.server - before.server, wall)
        result.fake_cpu_pct = _pct(after.fake - before.fake, wall)
        result.client_cpu_pct = _pct(after.client - before.client, wall)
        result.server_us_per_token = (after.server - before.server) / (replies * len(pieces)) * 1e6
        ours = result.server_cpu_pct + result.fake_cpu_pct + result.client_cpu_pct
        result.others_cpu_pct = max(0.0, _pct(after.machine - before.machine, wall) - ours)
        for tid, used in after.server_threads.items():
            delta = used - before.server_threads.get(tid, 0.0)
            name = "MainThread (event loop)" if tid == server.pid else names.get(tid, f"tid {tid}")
            if tid == server.pid:
                result.server_loop_pct = _pct(delta, wall)
            if delta > 0.005 * wall:
                key = name if name not in result.server_threads_pct else f"{name} ({tid})"
                result.server_threads_pct[key] = round(_pct(delta, wall), 1)
        request_times = await fetch_request_times(fake_port, thread_ids)
        if result.timed_out:
            result.notes.append(f"{tracker.remaining} feeds did not get their reply in {timeout} s")
        for client in clients:
            client.close()
        server.stop()
        server_log = server.log()
        if "Traceback" in server_log or "ERROR" in server_log:
            result.notes.append("server log has errors: " + server_log[-600:])
        committed = read_database(db, before.wall - 1)
        streams: dict[str, list[FeedStream]] = {
            t: [parse_feed(c.reads) for c in group] for t, group in feeds.items()
        }
        result.figures = compute(
            committed=committed,
            feeds=streams,
            request_times=request_times,
            text=text,
            pieces=pieces,
            tokens_per_s=args.tokens_per_s,
            window=(before.wall, after.wall),
        )
        if profiler is not None and Path(profiler.out).exists():
            result.notes.append(
                "profile:\n" + summarize_pyspy(profiler.out, profiler.seconds, profiler.rate, names)
            )
    finally:
        for client in clients:
            client.close()
        if profiler is not None:
            profiler.stop()
        for child in (server, fake):
            if child is not None:
                child.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


# -- reporting ---------------------------------------------------------------------------------


def format_table(results: Sequence[RunResult]) -> str:
    """The figures table, one row per run, then each run's details."""
    header = (
        f"{'K':>5} {'S':>2} {'commits/s':>9} {'deltas/commit':>13} {'srv CPU%':>8} "
        f"{'loop%':>6} {'us/tok':>6} {'fake%':>6} {'bench%':>6} {'other%':>6} "
        f"{'commit→recv ms':>15} {'emit→commit ms':>15} {'emit→recv ms':>15} "
        f"{'bytes/reply B':>13} {'wall s':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        f = r.figures
        lines.append(
            f"{r.replies:>5} {r.subscribers:>2} {f.commits_per_s:>9.0f} "
            f"{f.deltas_per_commit_mean:>13.1f} {r.server_cpu_pct:>8.0f} {r.server_loop_pct:>6.0f} "
            f"{r.server_us_per_token:>6.0f} "
            f"{r.fake_cpu_pct:>6.0f} {r.client_cpu_pct:>6.0f} {r.others_cpu_pct:>6.0f} "
            f"{f.commit_to_receive.short():>15} "
            f"{f.emit_to_commit.short():>15} {f.emit_to_receive.short():>15} "
            f"{f.bytes_ratio_mean:>13.2f} {f.reply_wall.p50 / 1000:>7.2f}"
        )
    lines.append(
        "latencies are p50/p99/max; CPU is % of one core (the machine has "
        f"{os.cpu_count()}); us/tok is server CPU per streamed token; other% is every other "
        "process on the machine; wall s is the median reply's start→finish (nominal = tokens / T)"
    )
    for r in results:
        f = r.figures
        lines.append(f"\nK={r.replies} S={r.subscribers}:")
        lines.append(
            f"  window {r.window_s:.2f} s (posting the {r.replies} messages took "
            f"{r.posts_s:.2f} s), load average before {r.loadavg_before:.2f}"
        )
        lines.append(
            f"  {f.commits} commits, {f.deltas_committed} deltas ({f.deltas_per_reply_mean:.1f} per"
            f" reply), deltas per commit mean {f.deltas_per_commit_mean:.1f} max "
            f"{f.deltas_per_commit_max}"
        )
        threads = ", ".join(f"{k} {v:.0f}%" for k, v in sorted(r.server_threads_pct.items()))
        lines.append(f"  server threads: {threads}")
        lines.append(
            f"  reply wall p50/p99/max {f.reply_wall.short()} ms (nominal "
            f"{r.tokens / r.tokens_per_s * 1000:.0f}); achieved tokens/s p50 "
            f"{f.achieved_tokens_per_s_p50:.1f}; replies streaming at once: peak "
            f"{f.concurrency_peak}, mean {f.concurrency_mean:.0f}"
        )
        lines.append(
            f"  per token: emit→commit {f.emit_to_commit.short()} ms, of which coalescing wait "
            f"mean {f.coalescing_wait.mean:.0f} ms; last token of a delta → commit "
            f"{f.last_token_to_commit.short()} ms"
        )
        parts = ", ".join(f"{k} {v:.2f}" for k, v in f.ratio_parts.items())
        lines.append(
            f"  bytes per reply byte {f.bytes_ratio_mean:.2f} (min {f.bytes_ratio_min:.2f} max "
            f"{f.bytes_ratio_max:.2f}; reply {r.reply_bytes} B): {parts}"
        )
        problems = {
            "incomplete replies": f.incomplete_replies,
            "wrong text": f.wrong_text,
            "missing deltas": f.missing_deltas,
            "duplicate deltas": f.duplicate_deltas,
            "failed feeds": f.failed_subscribers,
            "deltas without commit": f.unmapped_events,
            "requests unmatched": f.requests_unmatched,
        }
        shown = ", ".join(f"{k} {v}" for k, v in problems.items() if v)
        lines.append(f"  checks: {shown or 'all replies complete, every delta once everywhere'}")
        for note in r.notes:
            lines.append("  " + note.replace("\n", "\n  "))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replies", default="100,1000", help="K values, comma-separated")
    parser.add_argument("--subscribers", default="1", help="S values, comma-separated [1]")
    parser.add_argument("--tokens-per-s", type=float, default=50.0, help="T [50]")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply [200]")
    parser.add_argument("--flush-ms", type=float, default=50.0, help="server --flush-ms [50]")
    parser.add_argument("--batch", type=int, default=200, help="feeds opened at a time [200]")
    parser.add_argument(
        "--post-concurrency",
        type=int,
        default=1000,
        help="messages posted at once, so the K replies start together [1000]",
    )
    parser.add_argument("--settle-s", type=float, default=1.0, help="pause before posting [1]")
    parser.add_argument("--timeout-s", type=float, default=0.0, help="0: 4 × N/T + 30 s, ≥ 60")
    parser.add_argument("--change-log-keep", type=int, default=1_000_000)
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra `serve` flag (repeatable)"
    )
    parser.add_argument("--source", default=str(REPO), help="source tree the children run from")
    parser.add_argument("--profile", action="store_true", help="py-spy record the server")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples/s [100]")
    parser.add_argument(
        "--profile-dir", default=str(Path(tempfile.gettempdir()) / "voicestack-stream")
    )
    parser.add_argument(
        "--profile-gil", action="store_true", help="py-spy --gil: who holds the GIL"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per (K, S) [1]")
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=0.0,
        help="before each run, wait up to this long for other load to fall below --quiet-below",
    )
    parser.add_argument(
        "--quiet-below", type=float, default=30.0, help="machine busy %% of one core [30]"
    )
    parser.add_argument(
        "--thread-names", action="store_true", help="name server threads (one py-spy dump)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--no-uvloop", action="store_true", help="client on plain asyncio")
    args = parser.parse_args(argv)
    try:
        args.ks = [int(p) for p in args.replies.split(",") if p.strip()]
        args.ss = [int(p) for p in args.subscribers.split(",") if p.strip()]
    except ValueError:
        parser.error("--replies and --subscribers take comma-separated integers")
    if not args.ks or not args.ss or min(args.ks + args.ss) < 1:
        parser.error("--replies and --subscribers need positive counts")
    if args.tokens < 1 or args.tokens_per_s <= 0:
        parser.error("--tokens and --tokens-per-s must be positive")
    return args


async def _main(args: argparse.Namespace) -> list[RunResult]:
    errors = watch_loop_errors()
    results = []
    for k in args.ks:
        for s in [s for s in args.ss for _ in range(args.repeat)]:
            print(f"running K={k} S={s} ...", file=sys.stderr, flush=True)
            result = await run_once(k, s, args)
            result.notes.extend(f"client error: {e}" for e in errors)
            errors.clear()
            results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run every requested (K, S) and print the figures."""
    args = parse_args(argv)
    soft, hard = raise_nofile_limit()
    needed = max(args.ks) * (max(args.ss) + 1) + 200
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
    if args.json:
        doc = {
            "config": {
                "tokens_per_s": args.tokens_per_s,
                "tokens": args.tokens,
                "flush_ms": args.flush_ms,
                "cpus": os.cpu_count(),
                "nofile": soft,
                "client_loop": "uvloop" if loop_factory else "asyncio",
            },
            "results": [asdict(r) for r in results],
        }
        print(json.dumps(doc, indent=2, default=str))
    else:
        print(
            f"stream: {args.tokens} tokens per reply at {args.tokens_per_s:g} tokens/s, "
            f"--flush-ms {args.flush_ms:g}, client on {'uvloop' if loop_factory else 'asyncio'}, "
            f"RLIMIT_NOFILE {soft}"
        )
        print(format_table(results))
    bad = any(
        r.timed_out or r.figures.incomplete_replies or r.figures.missing_deltas for r in results
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
