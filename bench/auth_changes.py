"""What a change to who may see what costs a server holding many open streams.

Every commit that touches tokens, users, sign-in sessions or thread membership goes through the
access guard, which ends the streams that lost their access. `--streams` thread-feed streams are
opened on one fresh server (the fake provider beside it, as bench/peers.py starts them); then
`--commits` such commits are made, one every 0.2 s, and the server's CPU over that window is
compared with its CPU over as long a window with nothing committed. Medians over `--repeat`.

- `--change token` (default): `voicestack token create` on the database file (a commit of
  another process, as an operator's is);
- `--change thread`: `POST /api/threads`, a new thread and its owner's membership (the request's
  own cost is in the figure).

    python3 -m bench.auth_changes
    python3 -m bench.auth_changes --streams 2000,8000 --commits 20 --repeat 3 --change thread
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.peers_servers import Fake, Voicestack
from bench.sse_client import http_call

GAP_S = 0.2  # between two commits
SETTLE_S = 2.0  # after the last: let the server finish with it


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def _streams(port: int, thread_id: str, token: str, count: int) -> list[asyncio.Task[None]]:
    """`count` thread-feed streams, read (and dropped) by tasks of this process."""
    request = (
        f"GET /api/threads/{thread_id}/events HTTP/1.1\r\nHost: bench\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()

    async def read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                pass
        finally:
            writer.close()  # held until here: a writer dropped closes its connection

    readers = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        readers.append(asyncio.create_task(read(reader, writer)))
    return readers


async def _one(
    work: Path, fake: Fake, streams: int, commits: int, change: str
) -> tuple[float, float]:
    """(ms of server CPU per change, ms of idle server CPU per as long a gap)."""
    server = Voicestack(work, fake.port)
    await server.start()
    readers: list[asyncio.Task[None]] = []
    try:
        thread_id = await server.create_thread()
        readers = await _streams(server.port, thread_id, server.token, streams)
        await asyncio.sleep(3)  # every stream opened and checked
        if any(task.done() for task in readers):
            raise RuntimeError("a stream ended before the measurement")
        db = str(server.workdir / "peers.db")
        cpu0, started = _cpu(server.pid), time.monotonic()
        for k in range(commits):
            if change == "thread":
                status, _ = await http_call(
                    server.port, "POST", "/api/threads", b"{}", server.token
                )
                if status != 201:
                    raise RuntimeError(f"POST /api/threads answered {status}")
            else:
                create = ["token", "create", "--user", f"bench-{k}", "--db", db]
                subprocess.run(
                    [sys.executable, "-m", "voicestack", *create], check=True, capture_output=True
                )
            await asyncio.sleep(GAP_S)
        await asyncio.sleep(SETTLE_S)
        busy = _cpu(server.pid) - cpu0
        window = time.monotonic() - started
        cpu1 = _cpu(server.pid)
        await asyncio.sleep(window)
        idle = _cpu(server.pid) - cpu1
        return busy * 1000 / commits, idle * 1000 / commits
    finally:
        for task in readers:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*readers, return_exceptions=True)
        server.stop()


async def _main(args: argparse.Namespace) -> list[tuple[int, float, float]]:
    work = Path(tempfile.mkdtemp(prefix="auth-changes-"))
    fake = Fake(work)
    rows = []
    try:
        for streams in args.counts:
            runs = [
                await _one(work, fake, streams, args.commits, args.change)
                for _ in range(args.repeat)
            ]
            busy = statistics.median(r[0] for r in runs)
            idle = statistics.median(r[1] for r in runs)
            rows.append((streams, busy, idle))
            print(f"{streams} streams: {[round(r[0], 1) for r in runs]}", file=sys.stderr)
    finally:
        fake.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    """Measure, then print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="2000,8000", help="comma-separated stream counts")
    parser.add_argument("--commits", type=int, default=20, help="tokens created per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--change", choices=("token", "thread"), default="token")
    args = parser.parse_args(argv)
    args.counts = [int(n) for n in args.streams.split(",") if n.strip()]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(args.counts) + 200
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    rows = asyncio.run(_main(args))
    what = "tokens created" if args.change == "token" else "threads created"
    print(f"{args.commits} {what}, one every {GAP_S} s; medians of {args.repeat}")
    print()
    print(f"| open streams | server CPU ms per {what[:-1]} | idle ms per as long | net ms |")
    print("|---|---|---|---|")
    for streams, busy, idle in rows:
        print(f"| {streams:,} | {busy:.1f} | {idle:.1f} | {busy - idle:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
