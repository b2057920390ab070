"""After a `bench/stream.py` run: parse the feeds, join them with the database, compute figures.

Nothing here runs while the benchmark measures. The feed client only stamped and stored bytes;
this module splits them into SSE events, reads the server's database file (read-only, after the
server stopped) and the fake provider's request log, and turns them into latencies and ratios.

Timing sources, all `time.time()` on one machine:

- commit: `_changes.committed_at` of the version whose `rows` list the `thread_events` id of a
  delta. The writer stamps it just before COMMIT, so commit→receive includes the COMMIT itself
  (well under a millisecond in WAL mode with synchronous=NORMAL).
- token emission: the fake provider logs each chat request when it arrives and paces its tokens
  against absolute deadlines from there: token j is due at `request time + j / T`. That is the
  schedule; if the fake falls behind (see its CPU), its lateness shows up as server delay, so the
  table also reports the fake's CPU and each reply's wall time against the nominal N / T.
- receive: the client's `data_received` stamp of the read holding the event's last byte.
"""

from __future__ import annotations

import bisect
import json
import math
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.sse_client import dechunk, http_status, percentile

# -- the feed as one subscriber received it ---------------------------------------------------


@dataclass(slots=True)
class FeedEvent:
    """One SSE event of a thread feed, stamped when its last byte arrived."""

    kind: str
    event_id: int | None
    data: bytes
    received: float
    size: int  # the event's bytes on the wire, without HTTP chunk framing


@dataclass
class FeedStream:
    """One subscriber's feed: its events and the raw bytes that came after its `ready` event."""

    status: int
    events: list[FeedEvent] = field(default_factory=list)
    ready_index: int | None = None  # index of the `ready` event in `events`
    bytes_after_ready: int = 0  # everything on the wire after `ready`: events, pings, framing

    @property
    def live(self) -> list[FeedEvent]:
        """The events after `ready` (the live part of the feed)."""
        if self.ready_index is None:
            return []
        return self.events[self.ready_index + 1 :]


def parse_feed(reads: Sequence[tuple[float, bytes]]) -> FeedStream:
    """Split a feed connection's stamped reads into SSE events."""
    if not reads:
        return FeedStream(0)
    raw = b"".join(data for _, data in reads)
    ends: list[int] = []
    total = 0
    for _, data in reads:
        total += len(data)
        ends.append(total)
    head_end = raw.find(b"\r\n\r\n")
    stream = FeedStream(http_status(raw))
    if head_end < 0:
        return stream
    _, spans = dechunk(raw, head_end + 4, len(raw))
    pending = b""
    for start, stop in spans:
        combined = pending + raw[start:stop]
        offset = start - len(pending)  # raw offset of combined[i] for i >= len(pending)
        pos = 0
        while (sep := combined.find(b"\n\n", pos)) >= 0:
            last_byte = offset + sep + 1
            received = reads[min(len(reads) - 1, bisect.bisect_right(ends, last_byte))][0]
            event = _parse_block(combined[pos:sep], received, sep + 2 - pos)
            if event is not None:
                stream.events.append(event)
                if event.kind == "ready" and stream.ready_index is None:
                    stream.ready_index = len(stream.events) - 1
                    stream.bytes_after_ready = len(raw) - (last_byte + 1)
            pos = sep + 2
        pending = combined[pos:]
    return stream


def _parse_block(block: bytes, received: float, size: int) -> FeedEvent | None:
    kind = "message"
    event_id: int | None = None
    data = b""
    for line in block.split(b"\n"):
        if line.startswith(b"event:"):
            kind = line[6:].strip().decode()
        elif line.startswith(b"id:"):
            event_id = int(line[3:].strip())
        elif line.startswith(b"data:"):
            data = line[5:].strip()
    if not data:
        return None  # a ping (": ping") or an empty block
    return FeedEvent(kind, event_id, data, received, size)


# -- what the server committed ----------------------------------------------------------------


@dataclass
class Delta:
    """One committed delta of a reply: its thread_events id, text, and where it sits."""

    event_id: int
    text: str
    start: int  # character offset of the delta's text in the reply
    committed_at: float | None


@dataclass
class Committed:
    """What the database says happened during the run."""

    versions: list[tuple[int, float, int]]  # (version, committed_at, thread_events rows)
    deltas: dict[str, list[Delta]]  # reply id -> its deltas, in order
    replies: dict[str, dict[str, Any]]  # reply id -> thread_id, status, text, wall_ms, tokens
    unmapped_events: int = 0  # delta events whose commit could not be found in `_changes`


def read_database(path: Path, since: float) -> Committed:
    """Read commits, deltas and replies from the server's database file (server stopped)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        commit_of: dict[int, float] = {}
        versions: list[tuple[int, float, int]] = []
        for version, rows, committed_at in conn.execute(
            "SELECT version, rows, committed_at FROM _changes WHERE committed_at >= ?"
            " ORDER BY version",
            (since,),
        ):
            ids = json.loads(rows).get("thread_events", [])
            for event_id in ids:
                commit_of[event_id] = committed_at
            versions.append((version, committed_at, len(ids)))
        replies = {
            row[0]: {
                "thread_id": row[1],
                "status": row[2],
                "text": row[3],
                "wall_ms": row[4],
                "completion_tokens": row[5],
            }
            for row in conn.execute(
                "SELECT id, thread_id, status, text, wall_ms, completion_tokens FROM messages"
                " WHERE role = 'assistant'"
            )
        }
        deltas: dict[str, list[Delta]] = defaultdict(list)
        unmapped = 0
        for event_id, ref, data in conn.execute(
            "SELECT id, ref, data FROM thread_events WHERE kind = 'delta' ORDER BY id"
        ):
            text = json.loads(data)["text"]
            previous = deltas[ref]
            start = previous[-1].start + len(previous[-1].text) if previous else 0
            committed_at = commit_of.get(event_id)
            unmapped += committed_at is None
            previous.append(Delta(event_id, text, start, committed_at))
        return Committed(versions, dict(deltas), replies, unmapped)
    finally:
        conn.close()


# -- figures ----------------------------------------------------------------------------------


@dataclass
class Dist:
    """p50 / p99 / max of a sample, in milliseconds."""

    n: int = 0
    p50: float = math.nan
    p99: float = math.nan
    max: float = math.nan
    mean: float = math.nan

    @classmethod
    def of_seconds(cls, values: Iterable[float]) -> Dist:
        """The distribution of `values` (seconds), reported in milliseconds."""
        ordered = sorted(values)
        if not ordered:
            return cls()
        return cls(
            len(ordered),
            percentile(ordered, 50) * 1000,
            percentile(ordered, 99) * 1000,
            ordered[-1] * 1000,
            sum(ordered) / len(ordered) * 1000,
        )

    def short(self) -> str:
        """`p50/p99/max` rounded to whole milliseconds."""
        if not self.n:
            return "-"
        return f"{self.p50:.0f}/{self.p99:.0f}/{self.max:.0f}"


@dataclass
class Figures:
    """Everything computed after one run."""

    commits: int = 0
    commits_per_s: float = 0.0
    deltas_committed: int = 0
    deltas_per_commit_mean: float = 0.0
    deltas_per_commit_max: int = 0
    deltas_per_reply_mean: float = 0.0
    commit_to_receive: Dist = field(default_factory=Dist)
    emit_to_commit: Dist = field(default_factory=Dist)  # per token: coalescing + ingest + write
    last_token_to_commit: Dist = field(default_factory=Dist)  # per delta: ingest + write only
    coalescing_wait: Dist = field(default_factory=Dist)  # per token: emit → its delta's last token
    emit_to_receive: Dist = field(default_factory=Dist)  # per token per subscriber: end to end
    bytes_ratio_mean: float = 0.0
    bytes_ratio_min: float = 0.0
    bytes_ratio_max: float = 0.0
    ratio_parts: dict[str, float] = field(default_factory=dict)  # mean bytes per reply byte
    reply_wall: Dist = field(default_factory=Dist)
    achieved_tokens_per_s_p50: float = 0.0
    concurrency_peak: int = 0  # replies streaming at the same moment (provider request → finish)
    concurrency_mean: float = 0.0  # time-weighted over the span from first start to last finish
    incomplete_replies: int = 0
    wrong_text: int = 0
    missing_deltas: int = 0
    duplicate_deltas: int = 0
    failed_subscribers: int = 0
    unmapped_events: int = 0
    requests_unmatched: int = 0


def token_ends(pieces: Sequence[str]) -> list[int]:
    """Cumulative character offsets at which each token of the reply ends."""
    ends, total = [], 0
    for piece in pieces:
        total += len(piece)
        ends.append(total)
    return ends


def compute(
    *,
    committed: Committed,
    feeds: dict[str, list[FeedStream]],
    request_times: dict[str, float],
    text: str,
    pieces: Sequence[str],
    tokens_per_s: float,
    window: tuple[float, float],
) -> Figures:
    """Join the feeds with the database and the provider log into the run's figures.

    `feeds` maps each thread id to its subscribers' parsed streams, `request_times` each thread
    id to the time the fake provider logged its chat request.
    """
    figures = Figures(unmapped_events=committed.unmapped_events)
    t0, t1 = window
    in_window = [v for v in committed.versions if t0 <= v[1] <= t1]
    figures.commits = len(in_window)
    figures.commits_per_s = len(in_window) / max(1e-9, t1 - t0)
    with_events = [n for _, _, n in in_window if n]
    figures.deltas_committed = sum(len(d) for d in committed.deltas.values())
    figures.deltas_per_commit_mean = sum(with_events) / max(1, len(with_events))
    figures.deltas_per_commit_max = max(with_events, default=0)
    figures.deltas_per_reply_mean = figures.deltas_committed / max(1, len(committed.deltas))

    ends = token_ends(pieces)
    text_bytes = len(text.encode())
    by_thread = {r["thread_id"]: (rid, r) for rid, r in committed.replies.items()}
    commit_recv: list[float] = []
    emit_commit: list[float] = []
    last_commit: list[float] = []
    waits: list[float] = []
    emit_recv: list[float] = []
    ratios: list[float] = []
    parts: Counter[str] = Counter()
    walls: list[float] = []
    rates: list[float] = []
    spans: list[tuple[float, float]] = []
    for thread_id, streams in feeds.items():
        reply_id, reply = by_thread.get(thread_id, (None, None))
        if reply is None or reply["status"] != "complete":
            figures.incomplete_replies += 1
            continue
        if reply["text"] != text:
            figures.wrong_text += 1
        if reply["wall_ms"]:
            walls.append(reply["wall_ms"] / 1000)
            rates.append(len(pieces) / (reply["wall_ms"] / 1000))
        deltas = committed.deltas.get(reply_id, [])
        requested = request_times.get(thread_id)
        if requested is None:
            figures.requests_unmatched += 1
        elif reply["wall_ms"]:
            spans.append((requested, requested + reply["wall_ms"] / 1000))
        # Per token: when it was due from the provider, and which delta carried it.
        token_delta: list[int] = []
        for index, delta in enumerate(deltas):
            stop = delta.start + len(delta.text)
            while len(token_delta) < len(ends) and ends[len(token_delta)] <= stop:
                token_delta.append(index)
        last_token = {d: j for j, d in enumerate(token_delta)}  # delta -> its last token
        if requested is not None:
            for j, d in enumerate(token_delta):
                emitted = requested + j / tokens_per_s
                waits.append((last_token[d] - j) / tokens_per_s)
                if deltas[d].committed_at is not None:
                    emit_commit.append(deltas[d].committed_at - emitted)
            for d, j in last_token.items():
                if deltas[d].committed_at is not None:
                    last_commit.append(deltas[d].committed_at - (requested + j / tokens_per_s))
        delta_index = {delta.event_id: i for i, delta in enumerate(deltas)}
        for stream in streams:
            if stream.status != 200 or stream.ready_index is None:
                figures.failed_subscribers += 1
                continue
            seen: Counter[int] = Counter()
            received_at: dict[int, float] = {}
            for event in stream.live:
                parts[event.kind] += event.size
                if event.kind != "delta" or event.event_id is None:
                    continue
                seen[event.event_id] += 1
                if seen[event.event_id] == 1:
                    received_at[event.event_id] = event.received
            figures.missing_deltas += sum(1 for d in deltas if d.event_id not in seen)
            figures.duplicate_deltas += sum(n - 1 for n in seen.values() if n > 1)
            for event_id, received in received_at.items():
                index = delta_index.get(event_id)
                if index is None:
                    continue
                committed_at = deltas[index].committed_at
                if committed_at is not None:
                    commit_recv.append(received - committed_at)
            if requested is not None:
                for j, d in enumerate(token_delta):
                    received = received_at.get(deltas[d].event_id)
                    if received is not None:
                        emit_recv.append(received - (requested + j / tokens_per_s))
            ratios.append(stream.bytes_after_ready / text_bytes)
            parts["framing and pings"] += stream.bytes_after_ready - sum(
                e.size for e in stream.live
            )
    figures.commit_to_receive = Dist.of_seconds(commit_recv)
    figures.emit_to_commit = Dist.of_seconds(emit_commit)
    figures.last_token_to_commit = Dist.of_seconds(last_commit)
    figures.coalescing_wait = Dist.of_seconds(waits)
    figures.emit_to_receive = Dist.of_seconds(emit_recv)
    figures.reply_wall = Dist.of_seconds(walls)
    figures.achieved_tokens_per_s_p50 = percentile(sorted(rates), 50)
    figures.concurrency_peak, figures.concurrency_mean = concurrency(spans)
    if ratios:
        figures.bytes_ratio_mean = sum(ratios) / len(ratios)
        figures.bytes_ratio_min = min(ratios)
        figures.bytes_ratio_max = max(ratios)
        figures.ratio_parts = {
            kind: size / len(ratios) / text_bytes for kind, size in parts.most_common()
        }
    return figures


def concurrency(spans: Sequence[tuple[float, float]]) -> tuple[int, float]:
    """Peak and time-weighted mean number of overlapping (start, end) spans."""
    if not spans:
        return 0, 0.0
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    level = peak = 0
    area = 0.0
    previous = edges[0][0]
    for moment, step in edges:
        area += level * (moment - previous)
        previous = moment
        level += step
        peak = max(peak, level)
    span = edges[-1][0] - edges[0][0]
    return peak, area / span if span > 0 else float(peak)
