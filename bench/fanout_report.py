"""The fan-out benchmark's results: per-tick latencies, one run's figures, the printed table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.sse_client import (
    SseClient,
    parse_stream,
    percentile,
)


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


def analyze(
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
