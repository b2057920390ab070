"""Semantic memory benchmark: search latency over many chunks, embedding throughput, and whether
embeddings in the background move the delta latency of streaming replies.

Sections (`--only search,inserts,jobs,deltas`):

- **search**: a database of `--chunks` messages (default 100,000), each one chunk with a vector
  of `--dimensions` (default 1,536; random unit vectors) and 20-60 words of a 5,000-word
  vocabulary in the FTS index, over 100 threads. `memory.search` runs in this process on a
  real Store exactly as the server runs it, as an admin (every chunk) and as a user who may read
  10 of the threads, in `hybrid` and `vector` mode; p50/p99 over `--queries` distinct queries,
  whose vectors are cached first (the provider's latency is not the search's).
- **inserts**: `--inserts` vectors committed one at a time into a `vec0` table with sqlite-vec's
  default storage chunks and with memory's own: how long each embedded chunk holds the writer.
- **jobs**: a server and the fake provider on loopback; one mutation writes `--notes` notes,
  and the time until every `memory.embed` job is done gives notes/s and chunks/s.
- **deltas**: bench/stream.py's run (`--replies` replies of 200 tokens at 50 tokens/s, one feed
  each), `--repeat` times per setting, while the app writes 20 notes a second: without
  embeddings and with them (the notes, the questions and the replies all embedded by jobs
  meanwhile, from a second fake provider), alternating which runs first. Token emit → feed
  receive and commit → receive, p50/p99, per run, their medians per setting, and the spread of
  the runs without embeddings: the noise band (`--quiet-wait-s` waits for a calmer machine;
  `--baseline-source DIR` adds runs of another source tree's server with embeddings).

    python3 -m bench.memory                       # all four, about 10 minutes
    python3 -m bench.memory --only search --chunks 20000 --queries 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.server_access import auth_headers, server_token
from bench.stream_procs import REPO, Child, start_fake, start_server
from voicestack.agent.embedding import Embedder, EmbeddingSettings
from voicestack.agent.llm import ProviderSettings
from voicestack.agent.memory import search
from voicestack.agent.memory_index import VECTOR_CHUNK_SIZE, create_vector_table, set_index
from voicestack.agent.memory_service import Memory, install_memory
from voicestack.functions.context import QueryCtx
from voicestack.identity import Caller
from voicestack.schema import ALL_MIGRATIONS
from voicestack.store.connection import open_connection
from voicestack.store.db import WriteDB
from voicestack.store.migrations import migrate_core
from voicestack.store.readers import Snapshot
from voicestack.store.store import Store
from voicestack.testing.fake_openai import FakeOpenAI

MODEL = "text-embedding-3-small"
THREADS = 100
USER_THREADS = 10


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct` percentile of `values` (nearest rank), in milliseconds."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index] * 1000


def build_database(path: Path, chunks: int, dimensions: int) -> None:
    """Messages with one chunk and one vector each, over THREADS threads; user `u1` reads 10."""
    rng = np.random.default_rng(7)
    words = [f"w{n}" for n in range(5000)]
    conn = open_connection(path)
    migrate_core(conn, ALL_MIGRATIONS)
    db = WriteDB(conn)
    stamp = time.time()
    with conn:
        db.execute(
            "INSERT INTO auth_users(id, name, role, created_at) VALUES ('u1', 'user1', 'user', ?)",
            (stamp,),
        )
        for t in range(THREADS):
            db.execute(
                "INSERT INTO threads(id, title, owner, created_at, updated_at)"
                " VALUES (?, NULL, NULL, ?, ?)",
                (f"t{t}", stamp, stamp),
            )
            if t < USER_THREADS:
                db.execute(
                    "INSERT INTO thread_members(thread_id, user_id, role, added_at)"
                    " VALUES (?, 'u1', 'member', ?)",
                    (f"t{t}", stamp),
                )
        create_vector_table(db, dimensions)
        set_index(db, MODEL, dimensions, False)
    pick = random.Random(7)
    batch = 5000
    for start in range(0, chunks, batch):
        count = min(batch, chunks - start)
        vectors = rng.standard_normal((count, dimensions)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        with conn:
            for i in range(count):
                n = start + i
                thread = f"t{n % THREADS}"
                text = " ".join(pick.choices(words, k=pick.randint(20, 60)))
                db.execute(
                    "INSERT INTO messages(id, thread_id, position, role, text, status, created_at,"
                    " updated_at) VALUES (?, ?, ?, 'user', ?, 'complete', ?, ?)",
                    (f"m{n}", thread, n, text, stamp, stamp),
                )
                chunk_id = db.execute(
                    "INSERT INTO memory_chunks(message_id, thread_id, owner, seq, text, model,"
                    " dimensions, created_at) VALUES (?, ?, ?, 0, ?, ?, ?, ?)",
                    (f"m{n}", thread, thread, text, MODEL, dimensions, stamp),
                ).last_rowid
                db.execute(
                    "INSERT INTO memory_vectors(rowid, embedding, owner) VALUES (?, ?, ?)",
                    (chunk_id, vectors[i].tobytes(), thread),
                )
    conn.close()


def bench_search(args: argparse.Namespace, workdir: Path) -> list[list[str]]:
    """Rows of the search table."""
    path = workdir / "search.db"
    started = time.perf_counter()
    build_database(path, args.chunks, args.dimensions)
    print(f"built {args.chunks:,} chunks in {time.perf_counter() - started:.0f} s")
    rows = []
    with FakeOpenAI() as fake:
        provider = ProviderSettings(base_url=fake.api_base, api_key=None, max_retries=0)
        embedder = Embedder(EmbeddingSettings(MODEL, args.dimensions, provider))
        store = Store(path, readers=1, migrations=ALL_MIGRATIONS)
        store.start()
        try:
            memory = Memory(store, embedder, str(path))
            store.write_sync(memory.prepare)
            install_memory(memory)
            words = [f"w{n}" for n in range(5000)]
            pick = random.Random(11)
            queries = [" ".join(pick.choices(words, k=4)) for _ in range(args.queries)]
            for text in queries:
                embedder.embed_query(text)  # cache the vectors: the provider is not measured
            for who, user in (
                ("admin", Caller("a", "admin", "admin")),
                ("user", Caller("u1", "user1")),
            ):
                for mode in ("hybrid", "vector"):
                    seconds = []
                    for text in queries:
                        parsed = search.parse_args({"query": text, "mode": mode, "limit": 20})

                        def run(snap: Snapshot, parsed: Any = parsed, user: Caller = user) -> Any:
                            return search.invoke(QueryCtx(snap.db(), user, snap.version), parsed)

                        begin = time.perf_counter()
                        store.read_sync(run)
                        seconds.append(time.perf_counter() - begin)
                    scope = f"{args.chunks:,}" if who == "admin" else f"{args.chunks // 10:,}"
                    rows.append(
                        [
                            mode,
                            f"{who} ({scope} chunks)",
                            f"{percentile(seconds, 50):.0f}",
                            f"{percentile(seconds, 99):.0f}",
                        ]
                    )
                    print(rows[-1])
        finally:
            store.close()
            asyncio.run(embedder.aclose())
    return rows


def bench_inserts(args: argparse.Namespace, workdir: Path) -> list[list[str]]:
    """Rows of the insert table: how long one vector's commit holds the single writer, with
    sqlite-vec's default storage chunks (1,024 vectors) and with memory's (VECTOR_CHUNK_SIZE)."""
    rows = []
    rng = np.random.default_rng(3)
    for label, chunk_size in (("sqlite-vec default", None), ("memory_vectors", VECTOR_CHUNK_SIZE)):
        conn = open_connection(workdir / f"inserts-{chunk_size}.db")
        option = f", chunk_size={chunk_size}" if chunk_size else ""
        conn.execute(
            f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{args.dimensions}]"
            f" distance_metric=cosine, owner text{option})"
        )
        seconds = []
        for rowid in range(1, args.inserts + 1):
            blob = rng.standard_normal(args.dimensions).astype(np.float32).tobytes()
            begin = time.perf_counter()
            with conn:
                conn.execute(
                    "INSERT INTO v(rowid, embedding, owner) VALUES (?, ?, ?)",
                    (rowid, blob, f"t{rowid % THREADS}"),
                )
            seconds.append(time.perf_counter() - begin)
        conn.close()
        size = chunk_size or 1024
        rows.append(
            [
                f"{label} ({size:,} a chunk)",
                f"{percentile(seconds, 50):.2f}",
                f"{percentile(seconds, 99):.2f}",
                f"{sum(seconds) / len(seconds) * 1000:.2f}",
            ]
        )
        print(rows[-1], flush=True)
    return rows


def _server_args(flush_ms: float, extra: list[str]) -> argparse.Namespace:
    return argparse.Namespace(flush_ms=flush_ms, change_log_keep=1_000_000, server_arg=extra)


async def bench_jobs(args: argparse.Namespace, workdir: Path) -> list[str]:
    """The embedding jobs' throughput row."""
    os.environ["BENCH_MEMORY_NOTES_PER_S"] = "0"
    fake, fake_port = start_fake(workdir, REPO)
    server: Child | None = None
    try:
        extra = ["--app", "bench.memory_app", "--embedding-model", MODEL]
        server, port, db = start_server(workdir, REPO, fake_port, _server_args(50, extra))
        headers = auth_headers(server_token(db))
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60
        ) as http:
            cpu_before = server.cpu()
            begin = time.perf_counter()
            answer = await http.post(
                "/api/mutation/bench.notes", json={"args": {"count": args.notes}}
            )
            answer.raise_for_status()
            while True:
                health = (await http.get("/healthz?details=1")).json()
                chunks = health["details"]["memory"]["chunks"]
                if chunks >= args.notes:
                    break
                if time.perf_counter() - begin > 600:
                    raise RuntimeError(f"only {chunks} of {args.notes} notes embedded in 600 s")
                await asyncio.sleep(0.05)
            wall = time.perf_counter() - begin
            cpu_ms = (server.cpu() - cpu_before) * 1000 / args.notes
    finally:
        if server is not None:
            server.stop()
        fake.stop()
    rates = [f"{args.notes / wall:.0f}", f"{chunks / wall:.0f}", f"{cpu_ms:.1f}"]
    return [f"{args.notes:,}", f"{wall:.1f}", *rates]


async def bench_deltas(args: argparse.Namespace, workdir: Path) -> list[list[str]]:
    """Rows of the delta-latency table: each repeat runs without and with embeddings in the
    background (alternating which goes first), then the medians of each setting, and the spread
    of the runs without embeddings, which is the noise band any difference is read against.

    The embeddings come from a fake provider of their own: sharing the chat's fake would delay
    its paced tokens (the emit times the latency is measured from) by the vectors it computes.
    """
    from bench.stream import parse_args, run_once

    os.environ["BENCH_MEMORY_NOTES_PER_S"] = "20"
    embedder, embedder_port = start_fake(workdir, REPO)
    settings = [("off", "", str(REPO)), ("on", MODEL, str(REPO))]
    if args.baseline_source:
        settings.append(("on, baseline", MODEL, args.baseline_source))
    runs: dict[str, list[list[float]]] = {label: [] for label, _, _ in settings}
    rows = []
    try:
        for repeat in range(args.repeat):
            turn = repeat % len(settings)  # each setting takes its turn at going first
            for label, model, source in settings[turn:] + settings[:turn]:
                argv = ["--replies", str(args.replies), "--tokens", "200", "--tokens-per-s", "50"]
                argv += [
                    f"--source={source}",
                    "--server-arg=--app=bench.memory_app",
                    f"--server-arg=--embedding-model={model}",
                    f"--server-arg=--embedding-base-url=http://127.0.0.1:{embedder_port}/v1",
                    f"--quiet-wait-s={args.quiet_wait_s}",
                    f"--quiet-below={args.quiet_below}",
                ]
                result = await run_once(args.replies, 1, parse_args(argv))
                figures: Any = result.figures
                values = [
                    figures.emit_to_receive.p50,
                    figures.emit_to_receive.p99,
                    figures.commit_to_receive.p50,
                    figures.commit_to_receive.p99,
                    result.server_cpu_pct,
                    result.others_cpu_pct,
                ]
                runs[label].append(values)
                cells = [f"{v:.0f}" for v in values]
                rows.append(
                    [f"{label} (run {repeat + 1})", *cells, str(figures.incomplete_replies)]
                )
                print(rows[-1], flush=True)
    finally:
        embedder.stop()
    for label in runs:
        medians = [statistics.median(column) for column in zip(*runs[label], strict=True)]
        rows.append(
            [f"**{label}, median of {len(runs[label])}**", *(f"{v:.0f}" for v in medians), ""]
        )
    spread = [f"{min(column):.0f}–{max(column):.0f}" for column in zip(*runs["off"], strict=True)]
    rows.append(["noise band (off, min–max)", *spread, ""])
    return rows


def table(columns: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections and print their tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="search,inserts,jobs,deltas", help="sections to run")
    parser.add_argument("--inserts", type=int, default=3000, help="vectors inserted [3000]")
    parser.add_argument("--chunks", type=int, default=100_000, help="stored chunks [100000]")
    parser.add_argument("--dimensions", type=int, default=1536, help="vector size [1536]")
    parser.add_argument("--queries", type=int, default=50, help="searches per row [50]")
    parser.add_argument("--notes", type=int, default=1000, help="notes to embed [1000]")
    parser.add_argument("--replies", type=int, default=50, help="streaming replies [50]")
    parser.add_argument("--repeat", type=int, default=3, help="delta runs per setting [3]")
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=0.0,
        help="before each delta run, wait up to this long for other load to fall [0]",
    )
    parser.add_argument(
        "--quiet-below", type=float, default=30.0, help="machine busy %% of one core [30]"
    )
    parser.add_argument(
        "--baseline-source",
        default="",
        help="also run the server from this source tree with embeddings (e.g. `git archive` of"
        " an earlier commit), interleaved, to compare",
    )
    args = parser.parse_args(argv)
    sections = set(args.only.split(","))
    out = []
    with tempfile.TemporaryDirectory(prefix="voicestack-memory-") as tmp:
        workdir = Path(tmp)
        if "search" in sections:
            rows = bench_search(args, workdir)
            out.append(table(["mode", "scope", "p50 ms", "p99 ms"], rows))
        if "inserts" in sections:
            rows = bench_inserts(args, workdir)
            columns = ["vector table", "commit p50 ms", "p99 ms", "mean ms"]
            out.append(table(columns, rows))
        if "jobs" in sections:
            (workdir / "jobs").mkdir()
            row = asyncio.run(bench_jobs(args, workdir / "jobs"))
            columns = ["notes", "seconds", "notes/s", "chunks/s", "server CPU ms per note"]
            out.append(table(columns, [row]))
        if "deltas" in sections:
            (workdir / "deltas").mkdir()
            rows = asyncio.run(bench_deltas(args, workdir / "deltas"))
            columns = ["embeddings", "emit→receive p50", "p99", "commit→receive p50", "p99"]
            columns += ["server CPU %", "other CPU %", "incomplete"]
            out.append(table(columns, rows))
    print("\n\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
