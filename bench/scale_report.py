"""The tables of `bench/scale.py`: medians over runs, and ratios between set-ups."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, fields

from bench.scale_run import DISTINCT, SHARED, ScaleRow
from bench.scale_setups import EDGES, EDGES_VIA, SINGLE, WORKERS

ORDER = {SINGLE: 0, WORKERS: 1, EDGES: 2, EDGES_VIA: 3}


def median_rows(rows: Sequence[ScaleRow]) -> list[ScaleRow]:
    """One row per (section, set-up, N, mode), each number the median of its runs."""
    groups: dict[tuple[str, str, int, str], list[ScaleRow]] = {}
    for row in rows:
        groups.setdefault((row.section, row.setup, row.n, row.mode), []).append(row)
    merged: list[ScaleRow] = []
    for runs in groups.values():
        measured = [r for r in runs if not r.skipped] or runs
        values = asdict(measured[-1])
        for f in fields(ScaleRow):
            numbers = [getattr(r, f.name) for r in measured]
            if f.name == "runs":
                values["runs"] = len(measured) if not measured[-1].skipped else 0
            elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
                mid = statistics.median(numbers)
                values[f.name] = int(mid) if isinstance(numbers[0], int) else mid
        values["notes"] = sorted({n for r in measured for n in r.notes})
        values["commit"] = ", ".join(sorted({r.commit for r in measured if r.commit}))
        merged.append(ScaleRow(**values))
    merged.sort(key=lambda r: (r.n, ORDER.get(r.setup, 9), r.mode))
    return merged


def _n(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def _ratio(ours: float, base: float) -> str:
    return f"{ours / base:.2f}" if base > 0 and ours > 0 else ""


def _find(rows: Sequence[ScaleRow], setup: str, n: int, mode: str = SHARED) -> ScaleRow | None:
    for row in rows:
        if row.setup == setup and row.n == n and row.mode == mode and not row.skipped:
            return row
    return None


def fanout_table(all_rows: Sequence[ScaleRow]) -> str:
    """Write→delivery and CPU per set-up and N."""
    rows = median_rows([r for r in all_rows if r.section == "fanout"])
    head = (
        "| N | set-up | p50 ms | p99 ms | max ms | p50 / p99 ÷ single | delivered / expected "
        "| write answered p50 ms | primary CPU s | streams on the primary | primary CPU ms per "
        "stream | primary CPU ms per subscriber at connect | edges CPU s | nats-server CPU s "
        "| NATS msgs out | clients CPU s | others' CPU s / window s | load1 | runs |\n"
        "|" + "---|" * 19
    )
    lines = [head]
    for r in rows:
        if r.skipped:
            lines.append(f"| {r.n:,} | {r.setup} | skipped: {r.skipped} |" + " |" * 16)
            continue
        base = _find(rows, SINGLE, r.n)
        vs = ""
        if base is not None and r.setup != SINGLE:
            vs = f"{_ratio(r.p50_ms, base.p50_ms)} / {_ratio(r.p99_ms, base.p99_ms)}"
        notes = f" ({'; '.join(r.notes)})" if r.notes else ""
        cells = [
            f"{r.n:,}",
            r.setup,
            _n(r.p50_ms, 1),
            _n(r.p99_ms, 1),
            _n(r.max_ms, 1),
            vs,
            f"{r.delivered:,} / {r.expected:,}{notes}",
            _n(r.write_p50_ms, 1),
            _n(r.primary_cpu_s, 2),
            f"{r.primary_streams:,}",
            _n(r.cpu_per_stream_ms, 2),
            _n(r.subscribe_cpu_s * 1000 / r.n if r.n else 0, 2),
            _n(r.edges_cpu_s, 2) if r.setup in (EDGES, EDGES_VIA) else "",
            _n(r.nats_cpu_s, 2) if r.setup in (EDGES, EDGES_VIA) else "",
            f"{r.nats_out_msgs:,}" if r.setup in (EDGES, EDGES_VIA) else "",
            _n(r.client_cpu_s, 2),
            f"{_n(r.others_cpu_s, 1)} / {_n(r.window_s, 1)}",
            _n(r.load1, 2),
            str(r.runs),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dedup_table(all_rows: Sequence[ScaleRow]) -> str:
    """N clients of one thread with one token (one upstream per edge) against a token each."""
    rows = median_rows([r for r in all_rows if r.section == "dedup"])
    head = (
        "| N clients | credentials | streams on the primary | primary CPU s | primary CPU ms per "
        "write | stream msgs / KB the primary published | NATS msgs in / out | NATS MB out "
        "| edges CPU s | p50 / p99 ms | delivered / expected | primary CPU at connect s "
        "| runs |\n|" + "---|" * 13
    )
    lines = [head]
    for r in rows:
        notes = f" ({'; '.join(r.notes)})" if r.notes else ""
        lines.append(
            f"| {r.n:,} | {r.mode} | {r.primary_streams:,} | {_n(r.primary_cpu_s, 2)} "
            f"| {_n(r.primary_cpu_s * 1000 / max(1, r.writes), 1)} "
            f"| {r.stream_msgs:,} / {_n(r.stream_bytes / 1024, 1)} "
            f"| {r.nats_in_msgs:,} / {r.nats_out_msgs:,} | {_n(r.nats_out_bytes / 1e6, 2)} "
            f"| {_n(r.edges_cpu_s, 2)} | {_n(r.p50_ms, 1)} / {_n(r.p99_ms, 1)} "
            f"| {r.delivered:,} / {r.expected:,}{notes} | {_n(r.subscribe_cpu_s, 2)} | {r.runs} |"
        )
    for n in sorted({r.n for r in rows}):
        one, each = _find(rows, EDGES, n, SHARED), _find(rows, EDGES, n, DISTINCT)
        if one is not None and each is not None:
            lines.append(
                f"\nWith {n:,} clients, a token each costs the primary "
                f"{_ratio(each.primary_cpu_s, one.primary_cpu_s)}× the CPU of one shared "
                "subscription while delivering, "
                f"{_ratio(each.subscribe_cpu_s, one.subscribe_cpu_s)}× while connecting, and NATS "
                "carries "
                f"{_ratio(each.nats_out_msgs, one.nats_out_msgs)}× the messages "
                f"({_ratio(each.nats_out_bytes, one.nats_out_bytes)}× the bytes)."
            )
    return "\n".join(lines)


def hop_table(all_rows: Sequence[ScaleRow]) -> str:
    """Low-load latency, one server against a write and a feed through an edge."""
    rows = median_rows([r for r in all_rows if r.section == "hop"])
    head = (
        "| set-up | subscribers | write→delivery p50 ms | p99 ms | write answered p50 ms "
        "| added p50 ms (delivery / answer) vs single | runs |\n|" + "---|" * 7
    )
    lines = [head]
    for r in rows:
        base = _find(rows, SINGLE, r.n)
        added = ""
        if base is not None and r.setup != SINGLE:
            added = f"{r.p50_ms - base.p50_ms:+.1f} / {r.write_p50_ms - base.write_p50_ms:+.1f}"
        lines.append(
            f"| {r.setup} | {r.n:,} | {_n(r.p50_ms, 1)} | {_n(r.p99_ms, 1)} "
            f"| {_n(r.write_p50_ms, 1)} | {added} | {r.runs} |"
        )
    # Each edges run right after its single run, under the same load: the paired differences.
    pairs: list[tuple[float, float]] = []
    last: ScaleRow | None = None
    for r in all_rows:
        if r.section != "hop" or r.skipped:
            continue
        if r.setup == SINGLE:
            last = r
        elif last is not None and r.n == last.n:
            pairs.append((r.p50_ms - last.p50_ms, r.write_p50_ms - last.write_p50_ms))
            last = None
    if pairs:
        lines.append(
            f"\nPaired by run ({len(pairs)} pairs, each edges run right after its single run): "
            f"median added p50 {statistics.median(p[0] for p in pairs):+.1f} ms to delivery "
            f"(range {min(p[0] for p in pairs):+.1f} to {max(p[0] for p in pairs):+.1f}), "
            f"{statistics.median(p[1] for p in pairs):+.1f} ms to the write's answer."
        )
    return "\n".join(lines)


def fanout_summary(all_rows: Sequence[ScaleRow]) -> str:
    """Per N, the scale-out set-up's ratios to one process (or to `--workers 2`, where one
    process cannot hold N): latency, the primary's CPU, and all the server-side CPU."""
    rows = median_rows([r for r in all_rows if r.section == "fanout"])
    lines: list[str] = []
    for n in sorted({r.n for r in rows}):
        base = _find(rows, SINGLE, n) or _find(rows, WORKERS, n)
        if base is None:
            continue
        for setup in (WORKERS, EDGES, EDGES_VIA):
            row = _find(rows, setup, n)
            if row is None or row is base:
                continue
            served = row.primary_cpu_s + row.edges_cpu_s + row.nats_cpu_s
            lines.append(
                f"- N = {n:,}, {setup} ÷ {base.setup}: p50 {_ratio(row.p50_ms, base.p50_ms)}×, "
                f"p99 {_ratio(row.p99_ms, base.p99_ms)}×; the primary's CPU "
                f"{_ratio(row.primary_cpu_s, base.primary_cpu_s)}× ({_n(row.primary_cpu_s, 2)} "
                f"against {_n(base.primary_cpu_s, 2)} s), every server process's "
                f"{_ratio(served, base.primary_cpu_s)}×."
            )
    return "\n".join(lines)


LIMITS = """\
What one 2-core machine cannot show:

- Every process shares the same two cores: the primary, the edges, nats-server, the client
  processes (which use about as much CPU as the server side here), the fake provider, and
  other work on the machine ("others' CPU" above, often more than one core). Splitting the
  fan-out over more processes cannot add capacity here, only hops and context switches, so
  the latency rows under load compare contention, not capacity. On three machines (primary,
  two edges) plus separate clients, each edge brings its own cores, its own 20,000-file limit
  and its own network stack, and the primary keeps its CPU for writes and replies: what the
  rows show of the primary's CPU (it no longer depends on N) is the part that carries over.
- Loopback has no network latency: on real machines each hop adds its round trip (about
  0.1-0.5 ms within a data centre) to the hop rows' figures, which are the processing cost of
  the hop alone.
- Sends on loopback are charged to the sender: the kernel runs the receiver's TCP path in the
  sending process, so an edge's CPU here includes part of what a client machine would pay."""
