"""The relay bench's report: one row per run, the medians of each mode and call count, and
what the relay's resamplers alone hold back."""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from bench.realtime_relay_match import percentile

FIGURES = ("in_p50", "in_p95", "in_p99", "out_p50", "out_p95", "out_p99", "server", "per_call")


def report(
    rows: list[dict[str, Any]],
    args: argparse.Namespace,
    speech_ms: float,
    alone: dict[str, tuple[list[float], list[float]]],
) -> str:
    """The runs as text: one line per run, then the medians of each mode and call count."""
    lines = [
        f"relay bench: calls send 20 ms frames in real time (300 ms silence, {speech_ms:.0f} ms"
        f" of espeak-ng speech, {args.relay_gap_ms} ms silence, repeated); the fake provider"
        f" answers each turn with {args.reply_ms} ms of audio in 20 ms deltas at real-time pace;"
        f" {args.seconds:g} s measured after {args.warmup_s:g} s",
        "",
        "voicestack's added latency per audio frame (ms), inbound = client frame sent → provider"
        " reads its append, outbound = provider writes a delta → client reads its audio",
        "",
        f"  {'mode':<10}{'calls':>6} {'in p50':>7}{'p95':>8}{'p99':>8}{'max':>8}{'frames':>7}"
        f"  {'out p50':>7}{'p95':>8}{'p99':>8}{'max':>8}{'frames':>7}  {'server %':>8}"
        f"{'/call':>7}{'fake %':>7}{'client %':>9}{'others %':>9}",
    ]
    for row in rows:
        lines.append(line(row, row["mode"], row["calls"]) + notes(row))
    lines += ["", f"medians of {args.repeat} runs (goal: p95 ≤ 5 ms each way)", ""]
    keys = list(dict.fromkeys((r["mode"], r["calls"]) for r in rows))
    for mode, count in keys:
        runs = [r for r in rows if (r["mode"], r["calls"]) == (mode, count)]
        median = {
            k: statistics.median(r[k] for r in runs)
            for k in (*FIGURES, "in_max", "out_max", "fake", "client", "others")
        }
        median["in"] = [0] * round(statistics.median(len(r["in"]) for r in runs))
        median["out"] = [0] * round(statistics.median(len(r["out"]) for r in runs))
        lines.append(line(median, mode, count))
    lines += [
        "",
        "of which the relay's conversion alone holds back (frames every 20 ms, no other cost;"
        " the provider speaks 24 kHz PCM, or a phone's μ-law as is)",
    ]
    for label, (inbound, outbound) in alone.items():
        lines.append(
            f"  {label:<10}          in p50 {percentile(inbound, 50):5.1f}  p95"
            f" {percentile(inbound, 95):5.1f}    out p50 {percentile(outbound, 50):5.1f}  p95"
            f" {percentile(outbound, 95):5.1f}  p99 {percentile(outbound, 99):5.1f}"
        )
    return "\n".join(lines)


def line(row: dict[str, Any], mode: str, count: int) -> str:
    """One run (or the medians of runs) as a row of the report's table."""
    return (
        f"  {mode:<10}{count:>6} {row['in_p50']:>7.2f}{row['in_p95']:>8.2f}{row['in_p99']:>8.2f}"
        f"{row['in_max']:>8.1f}{len(row['in']):>7}  {row['out_p50']:>7.2f}{row['out_p95']:>8.2f}"
        f"{row['out_p99']:>8.2f}{row['out_max']:>8.1f}{len(row['out']):>7}  {row['server']:>8.1f}"
        f"{row['per_call']:>7.2f}{row['fake']:>7.1f}{row['client']:>9.1f}{row['others']:>9.1f}"
    )


def notes(row: dict[str, Any]) -> str:
    """What else a run saw: the provider's responses, barge-ins or errors, reconnections."""
    notes = [f"responses {row['responses']}"]
    bad = {k: v for k, v in row["events"].items() if k in ("error", "clear")}
    if bad:
        notes.append(f"client saw {bad}")
    if row["connections"] != row["calls"]:
        notes.append(f"{row['connections']} provider connections")
    return "   " + "; ".join(notes)
