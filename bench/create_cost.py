"""Server CPU per create at a fixed request rate: what one `threads.create` costs the server when
it is not saturated, the figure that throughput runs (`bench/peers.py`'s wrk rows) hide in noise.

A real `voicestack serve` child (`--workers N`) on a fresh database; 50 keep-alive connections
from this process send `POST /api/mutation/threads.create`, paced to `--rate` requests/s in all.
After a 2 s warm-up, the server's process tree's CPU seconds over `--seconds` are divided by the
requests answered. Each repeat is a fresh server; the table gives every run and the median.

    python3 -m bench.create_cost                      # 1,000/s, 10 s, --workers 1, 3 runs
    python3 -m bench.create_cost --workers 2 --rate 500
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.peers_servers import Fake, Voicestack, tree_cpu
from bench.sse_client import HOST

CONNECTIONS = 50
WARMUP_S = 2.0
BODY = b'{"args":{"title":"t"}}'


@dataclass
class Tally:
    """Requests answered, and how many of them were not 200."""

    answered: int = 0
    failed: int = 0


def create_request(token: str) -> bytes:
    """One `threads.create` request, as raw HTTP/1.1 bytes."""
    head = (
        "POST /api/mutation/threads.create HTTP/1.1\r\nHost: bench\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


async def paced_connection(
    port: int, request: bytes, k: int, rate: float, until: float, tally: Tally
) -> None:
    """Send `request` on one keep-alive connection, this connection's share of `rate`, until
    `until` (monotonic); connection `k` starts `k` slots in, so the load is even."""
    reader, writer = await asyncio.open_connection(HOST, port)
    interval = CONNECTIONS / rate
    due = time.monotonic() + k * interval / CONNECTIONS
    try:
        while time.monotonic() < until:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            due += interval
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            tally.answered += 1
            tally.failed += not head.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def load(port: int, request: bytes, rate: float, seconds: float) -> Tally:
    """`rate` requests/s over CONNECTIONS connections for `seconds`."""
    tally = Tally()
    until = time.monotonic() + seconds
    await asyncio.gather(
        *(paced_connection(port, request, k, rate, until, tally) for k in range(CONNECTIONS))
    )
    return tally


async def one_run(workers: int, rate: float, seconds: float) -> tuple[float, Tally]:
    """A fresh server: its CPU µs per create at `rate`, and the tally."""
    with tempfile.TemporaryDirectory(prefix="create-cost-") as tmp:
        work = Path(tmp)
        fake = Fake(work)
        server = Voicestack(work, fake.port, workers)
        try:
            await server.start()
            request = create_request(server.token)
            await load(server.port, request, rate, WARMUP_S)
            cpu_before = tree_cpu(server.pid)
            tally = await load(server.port, request, rate, seconds)
            cpu = tree_cpu(server.pid) - cpu_before
        finally:
            server.stop()
            fake.stop()
    return cpu * 1e6 / max(tally.answered, 1), tally


async def main(args: argparse.Namespace) -> None:
    """Run and print the table."""
    title = f"server CPU µs per create (--workers {args.workers})"
    print(f"| run | creates/s asked | answered | not 200 | {title} |")
    print("|---|---|---|---|---|")
    costs: list[float] = []
    for run in range(1, args.repeat + 1):
        cost, tally = await one_run(args.workers, args.rate, args.seconds)
        costs.append(cost)
        print(f"| {run} | {args.rate:,.0f} | {tally.answered:,} | {tally.failed} | {cost:,.0f} |")
    print(f"| median | | | | {statistics.median(costs):,.0f} |")


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="creates/s in all [1000]")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds a run [10]")
    parser.add_argument("--workers", type=int, default=1, help="`serve --workers` [1]")
    parser.add_argument("--repeat", type=int, default=3, help="runs, a fresh server each [3]")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
