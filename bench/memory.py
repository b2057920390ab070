"""Semantic memory benchmark: search latency over many chunks, embedding throughput, and whether
embeddings in the background move the delta latency of streaming replies.

Sections (`--only search,jobs,deltas`):

- **search**: a database of `--chunks` messages (default 100,000), each one chunk with a vector
  of `--dimensions` (default 1,536; random unit vectors) and 20-60 words of a 5,000-word
  vocabulary in the FTS index, over 100 threads. `memory.search` runs in this process on a
  real Store exactly as the server runs it, as an admin (every chunk) and as a user who may read
  10 of the threads, in `hybrid` and `vector` mode; p50/p99 over `--queries` distinct queries,
  whose vectors are cached first (the provider's latency is not the search's).
- **jobs**: a server and the fake provider on loopback; one mutation writes `--notes` notes,
  and the time until every `memory.embed` job is done gives notes/s and chunks/s.
- **deltas**: bench/stream.py's run (`--replies` replies of 200 tokens at 50 tokens/s, one feed
  each), `--repeat` times per setting, while the app writes 20 notes a second: without
  embeddings, then with them (the notes, the questions and the replies all embedded by jobs
  meanwhile, from a second fake provider). Token emit → feed receive and commit → receive,
  p50/p99.

    python3 -m bench.memory                       # all three, about 5 minutes
    python3 -m bench.memory --only search --chunks 20000 --queries 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
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
from voicestack.agent.memory_index import create_vector_table, set_index
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
    """Rows of the delta-latency table: without, then with, embeddings in the background.

    The embeddings come from a fake provider of their own: sharing the chat's fake would delay
    its paced tokens (the emit times the latency is measured from) by the vectors it computes.
    """
    from bench.stream import parse_args, run_once

    os.environ["BENCH_MEMORY_NOTES_PER_S"] = "20"
    embedder, embedder_port = start_fake(workdir, REPO)
    rows = []
    try:
        for _ in range(args.repeat):
            for label, model in (("off", ""), ("on", MODEL)):
                argv = ["--replies", str(args.replies), "--tokens", "200", "--tokens-per-s", "50"]
                argv += [
                    "--server-arg=--app=bench.memory_app",
                    f"--server-arg=--embedding-model={model}",
                    f"--server-arg=--embedding-base-url=http://127.0.0.1:{embedder_port}/v1",
                ]
                result = await run_once(args.replies, 1, parse_args(argv))
                figures: Any = result.figures
                rows.append(
                    [
                        label,
                        f"{figures.emit_to_receive.p50:.0f}",
                        f"{figures.emit_to_receive.p99:.0f}",
                        f"{figures.commit_to_receive.p50:.0f}",
                        f"{figures.commit_to_receive.p99:.0f}",
                        f"{result.server_cpu_pct:.0f}",
                        str(figures.incomplete_replies),
                    ]
                )
                print(rows[-1])
    finally:
        embedder.stop()
    return rows


def table(columns: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections and print their tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="search,jobs,deltas", help="sections to run")
    parser.add_argument("--chunks", type=int, default=100_000, help="stored chunks [100000]")
    parser.add_argument("--dimensions", type=int, default=1536, help="vector size [1536]")
    parser.add_argument("--queries", type=int, default=50, help="searches per row [50]")
    parser.add_argument("--notes", type=int, default=1000, help="notes to embed [1000]")
    parser.add_argument("--replies", type=int, default=50, help="streaming replies [50]")
    parser.add_argument("--repeat", type=int, default=2, help="delta runs per setting [2]")
    args = parser.parse_args(argv)
    sections = set(args.only.split(","))
    out = []
    with tempfile.TemporaryDirectory(prefix="voicestack-memory-") as tmp:
        workdir = Path(tmp)
        if "search" in sections:
            rows = bench_search(args, workdir)
            out.append(table(["mode", "scope", "p50 ms", "p99 ms"], rows))
        if "jobs" in sections:
            (workdir / "jobs").mkdir()
            row = asyncio.run(bench_jobs(args, workdir / "jobs"))
            columns = ["notes", "seconds", "notes/s", "chunks/s", "server CPU ms per note"]
            out.append(table(columns, [row]))
        if "deltas" in sections:
            (workdir / "deltas").mkdir()
            rows = asyncio.run(bench_deltas(args, workdir / "deltas"))
            columns = ["embeddings", "emit→receive p50", "p99", "commit→receive p50", "p99"]
            out.append(table([*columns, "server CPU %", "incomplete"], rows))
    print("\n\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
