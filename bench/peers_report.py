"""Figures of `bench/peers.py`: the rows it measures, their medians over runs, the markdown report
with voicestack/PocketBase ratios and the targets of issue 14, and the p99-against-N chart."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

PB = "PocketBase"
FEED = "voicestack feed"
WATCH = "voicestack watch"
# For scale at one subscriber: a send's SQL on httptools and uvloop, nothing else (send_floor.py).
FLOOR = "floor: a send's SQL alone"
# The same as an ASGI app behind uvicorn: what the HTTP server adds to the floor.
FLOOR_ASGI = "floor behind uvicorn"


@dataclass
class WriteRow:
    """One wrk run: `kind` is create or health."""

    server: str
    kind: str
    route: str
    connections: int
    requests_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    non_2xx: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    runs: int = 1
    error: str = ""
    written_kib_per_request: float = 0.0


@dataclass
class FanoutRow:
    """One fan-out run: N subscribers of `server`, M writes."""

    server: str
    n: int
    workers: int = 1
    writes: int = 0
    subscribed: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    delivered: int = 0
    expected: int = 0
    events: int = 0
    events_per_s: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    client_processes: int = 0
    client_busy: float = 0.0  # the busiest client process's CPU ÷ its window
    rss_base_mib: float = 0.0
    rss_peak_mib: float = 0.0
    idle_kib_per_sub: float = 0.0
    peak_kib_per_sub: float = 0.0
    write_p50_ms: float = 0.0
    write_max_ms: float = 0.0
    window_s: float = 0.0  # from the go signal to the last client's report
    other_cpu_s: float = 0.0  # what other processes on the machine used in that window
    fake_cpu_s: float = 0.0
    busy_before_pct: float = 0.0
    runs: int = 1
    skipped: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class WireRow:
    """One wire-bytes run."""

    encoding: str = ""
    words: int = 0
    tokens_per_s: float = 0.0
    wire_bytes: int = 0
    decoded_bytes: int = 0
    reply_bytes: int = 0
    ratio: float = 0.0
    seconds: float = 0.0
    runs: int = 1
    error: str = ""


Row = TypeVar("Row", WriteRow, FanoutRow, WireRow)


def median_rows(rows: Sequence[Row], key: Callable[[Row], Any]) -> list[Row]:
    """One row per key, each number the median over that key's runs (text from the last run)."""
    groups: dict[Any, list[Row]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    merged: list[Row] = []
    for runs in groups.values():
        last = runs[-1]
        values = asdict(last)
        for f in fields(last):
            numbers = [getattr(r, f.name) for r in runs]
            if f.name == "runs":
                values["runs"] = sum(numbers)
            elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
                mid = statistics.median(numbers)
                values[f.name] = type(numbers[0])(mid) if isinstance(numbers[0], int) else mid
        if isinstance(last, FanoutRow):
            values["notes"] = sorted({n for r in runs for n in r.notes})  # type: ignore[attr-defined]
        merged.append(type(last)(**values))
    return merged


def _num(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if ours and theirs else "–"


def voicestack_name(workers: int) -> str:
    """The server column of a voicestack row: `serve`'s default, or `serve --workers N`."""
    return "voicestack" if workers == 1 else f"voicestack --workers {workers}"


def writes_table(rows: Sequence[WriteRow]) -> str:
    """HTTP request rates side by side."""
    by = {(r.server, r.kind, r.connections): r for r in median_rows(rows, _write_key)}
    out = [
        "| request (voicestack vs PocketBase) | voicestack | conns | voicestack /s | PocketBase /s "
        "| ratio | p99 ms (vs / PB) | server CPU s (vs / PB) | wrk CPU s (vs / PB) "
        "| KiB written per request (vs / PB) | non-2xx (vs / PB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "create": "`POST /api/mutation/threads.create` vs record create",
        "health": "for scale: `GET /healthz` vs `GET /api/health`",
    }
    ours = sorted({r.server for r in rows if r.server != PB}, key=lambda n: (len(n), n))
    for kind in ("create", "health"):
        for conns, server in itertools.product(
            sorted({r.connections for r in rows if r.kind == kind}), ours
        ):
            vs = by.get((server, kind, conns)) or WriteRow(server, kind, "", conns)
            pb = by.get((PB, kind, conns)) or WriteRow(PB, kind, "", conns)
            how = "`serve`" if server == "voicestack" else f"`serve {server.split(' ', 1)[1]}`"
            out.append(
                f"| {names[kind]} | {how} | {conns} | {_num(vs.requests_per_s)} | "
                f"{_num(pb.requests_per_s)} | {_ratio(vs.requests_per_s, pb.requests_per_s)} | "
                f"{vs.p99_ms:.1f} / {pb.p99_ms:.1f} | {vs.server_cpu_s:.1f} / "
                f"{pb.server_cpu_s:.1f} | {vs.client_cpu_s:.1f} / {pb.client_cpu_s:.1f} | "
                f"{vs.written_kib_per_request:.1f} / {pb.written_kib_per_request:.1f} | "
                f"{vs.non_2xx} / {pb.non_2xx} |"
            )
    errors = [f"- {r.server} {r.kind} {r.connections}: {r.error}" for r in rows if r.error]
    return "\n".join(out + errors)


def _write_key(r: WriteRow) -> tuple[str, str, int]:
    return (r.server, r.kind, r.connections)


def _fanout_key(r: FanoutRow) -> tuple[str, int]:
    return (r.server, r.n)


def fanout_table(rows: Sequence[FanoutRow]) -> str:
    """Write→delivery latency, deliveries, CPU and memory per N and server."""
    merged = median_rows(rows, _fanout_key)
    pb = {r.n: r for r in merged if r.server == PB and not r.skipped}
    out = [
        "| N | server | p50 ms | p99 ms | max ms | p99 ÷ PB | p50 ÷ PB | delivered / expected "
        "| events/s (per write per sub) | server CPU s | peak RSS MiB | idle KiB/sub "
        "| peak KiB/sub | client CPU s (procs, busiest) | others' CPU s / window s "
        "| write answered p50 / max ms | runs |",
        "|" + "---|" * 17,
    ]
    order = {PB: 0, FEED: 1, WATCH: 2, FLOOR: 3, FLOOR_ASGI: 4}
    for r in sorted(merged, key=lambda r: (r.n, order.get(r.server, 9))):
        name = r.server + (f" (--workers {r.workers})" if r.workers > 1 else "")
        if r.skipped:
            out.append(f"| {r.n:,} | {name} | skipped: {r.skipped} |" + " |" * 14)
            continue
        theirs = pb.get(r.n)
        ratios = "| | "
        if r.server != PB and theirs:
            ratios = f"| {_ratio(r.p99_ms, theirs.p99_ms)} | {_ratio(r.p50_ms, theirs.p50_ms)} "
        out.append(
            f"| {r.n:,} | {name} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.max_ms:.1f} {ratios}"
            f"| {r.delivered:,} / {r.expected:,} | {_num(r.events_per_s)} "
            f"({r.events / max(1, r.delivered):.1f}) | "
            f"{r.server_cpu_s:.2f} | {r.rss_peak_mib:.0f} | {r.idle_kib_per_sub:.1f} | "
            f"{r.peak_kib_per_sub:.1f} | {r.client_cpu_s:.2f} "
            f"({r.client_processes}, {r.client_busy * 100:.0f} %) | "
            f"{r.other_cpu_s:.1f} / {r.window_s:.1f} | "
            f"{r.write_p50_ms:.1f} / {r.write_max_ms:.1f} | {r.runs} |"
        )
    notes = [f"- N={r.n} {r.server}: {n}" for r in merged for n in r.notes]
    return "\n".join(out + notes)


def wire_table(rows: Sequence[WireRow]) -> str:
    """Wire bytes per reply byte."""
    out = [
        "| watcher | content-encoding | reply | wire bytes | decoded bytes | reply bytes "
        "| wire ÷ reply | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in median_rows(rows, lambda r: (r.words, r.tokens_per_s)):
        out.append(
            f"| thread feed, `Accept-Encoding: gzip, deflate, br` | {r.encoding} | {r.words} "
            f"words at {r.tokens_per_s:g} tokens/s | {r.wire_bytes:,} | {r.decoded_bytes:,} | "
            f"{r.reply_bytes:,} | **{r.ratio:.2f}** | {r.runs} |"
            + (f" {r.error}" if r.error else "")
        )
    return "\n".join(out)


def targets_table(
    writes: Sequence[WriteRow], fanout: Sequence[FanoutRow], wire: Sequence[WireRow]
) -> str:
    """Issue 14's targets, each with what this run measured."""
    w = {(r.server, r.kind, r.connections): r for r in median_rows(writes, _write_key)}
    f = {(r.server, r.n): r for r in median_rows(fanout, _fanout_key) if not r.skipped}
    lines = ["| target | measured | met |", "|---|---|---|"]

    def add(target: str, measured: str, met: bool | None) -> None:
        lines.append(
            f"| {target} | {measured} | {'–' if met is None else 'yes' if met else 'no'} |"
        )

    pb = w.get((PB, "create", 50))
    for (server, kind, conns), vs in sorted(w.items()):
        if server == PB or kind != "create" or conns != 50 or not (pb and pb.requests_per_s):
            continue
        ratio = vs.requests_per_s / pb.requests_per_s
        add(f"HTTP creates/s ≥ 1.0× PocketBase (50 conns; {server})", f"{ratio:.2f}×", ratio >= 1.0)
    for n in (1000, 5000, 10000):
        ours, theirs = f.get((FEED, n)), f.get((PB, n))
        if ours and theirs and theirs.p99_ms:
            ratio = ours.p99_ms / theirs.p99_ms
            add(f"feed p99 ≤ 0.5× PocketBase at {n:,}", f"{ratio:.2f}×", ratio <= 0.5)
    ours, theirs, floor = f.get((FEED, 1)), f.get((PB, 1)), f.get((FLOOR, 1))
    if ours and theirs:
        ok = ours.p50_ms <= theirs.p50_ms and ours.p50_ms <= 2.0
        beside = f"; the floor {floor.p50_ms:.2f} ms" if floor else ""
        if (behind := f.get((FLOOR_ASGI, 1))) is not None:
            beside += f", behind uvicorn {behind.p50_ms:.2f} ms"
        add(
            "1 subscriber: p50 ≤ PocketBase's and ≤ 2 ms",
            f"{ours.p50_ms:.2f} ms vs {theirs.p50_ms:.2f} ms{beside}",
            ok,
        )
    for (server, n), r in sorted(f.items()):
        if n >= 20000 and server != PB:
            add(
                f"{n:,} subscribers ({server}, --workers {r.workers}): all delivered",
                f"{r.delivered:,} / {r.expected:,}",
                r.delivered == r.expected,
            )
    idle = [r.idle_kib_per_sub for (s, n), r in f.items() if s == FEED and n >= 1000]
    if idle:
        add(
            "≤ 20 KiB server memory per idle subscriber (feed, N ≥ 1,000, worst)",
            f"{max(idle):.1f} KiB",
            max(idle) <= 20,
        )
    for wr in median_rows(wire, lambda w: (w.words, w.tokens_per_s)):
        add(
            f"feed bytes per reply byte ≤ 3 ({wr.words} words, {wr.tokens_per_s:g} tokens/s)",
            f"{wr.ratio:.2f}",
            wr.ratio <= 3 if wr.ratio else None,
        )
    return "\n".join(lines)


def draw_p99(rows: Sequence[FanoutRow], path: Path) -> str:
    """A PNG of p99 write→delivery latency against N for every server; "" or why not drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    merged = [r for r in median_rows(rows, _fanout_key) if not r.skipped and r.delivered]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for server, style in ((PB, "o-"), (FEED, "s-"), (WATCH, "^--")):
        points = sorted((r.n, r.p99_ms) for r in merged if r.server == server)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=server)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("SSE subscribers (N)")
    ax.set_ylabel("p99 write→delivery (ms)")
    ax.set_title("Fan-out p99 against N, side by side on one 2-core machine")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return ""
