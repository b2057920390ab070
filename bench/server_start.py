"""Server start-up: how long `voicestack serve` takes from launch until `/healthz` answers, and
how much CPU it spends on the way.

Each start is a fresh process of this interpreter (the console script's own code path,
`cli.main:run`) serving a new database in a temporary directory, with no VOICESTACK_ or OPENAI_
settings from the environment. It is timed from launch to the first `GET /healthz` that answers
200, and its CPU (user + system) is read at that moment, before it is stopped. Two rows: no
provider (the README's first command), and a provider configured (`--openai-base-url`, which
loads the OpenAI SDK as the server starts; nothing listens there, and nothing calls it).

`--trees` compares source trees (checkouts or `git archive` copies, each with its bytecode
written, as `make test` writes it): they take turns, start by start, each first in every other
round, so that the machine's state weighs on both alike. Medians and minimums.

    python -m bench.server_start                           # this checkout, 10 starts a row
    python -m bench.server_start --trees /tmp/a,/tmp/b --runs 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench.voice_procs import free_port

REPO = Path(__file__).resolve().parents[1]
RUN_CLI = "import sys; from cli.main import run; sys.argv[0] = 'voicestack'; run()"
ROWS = {
    "no provider": [],
    "a provider configured": ["--openai-base-url", "http://127.0.0.1:9/v1"],
}
READY_TIMEOUT_S = 60.0


def start_once(tree: Path, extra: list[str]) -> tuple[float, float]:
    """One start of `serve` from `tree`: (seconds until /healthz answered, CPU seconds by then)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICESTACK_", "OPENAI_"))}
    env["PYTHONPATH"] = str(tree)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-c", RUN_CLI, "serve", "--db", f"{tmp}/start.db"]
        command += ["--port", str(port), "--no-access-log", *extra]
        started = time.perf_counter()
        child = subprocess.Popen(
            command, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            ready = _wait_ready(child, port, started)
            times = psutil.Process(child.pid).cpu_times()
            return ready, times.user + times.system
        finally:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)


def _wait_ready(child: subprocess.Popen[bytes], port: int, started: float) -> float:
    url = f"http://127.0.0.1:{port}/healthz"
    while True:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        if child.poll() is not None:
            raise RuntimeError(f"the server exited with {child.returncode} before it answered")
        if time.perf_counter() - started > READY_TIMEOUT_S:
            raise RuntimeError(f"no answer from {url} in {READY_TIMEOUT_S} s")
        time.sleep(0.01)


def main() -> None:
    """Print, per row and tree, the median and fastest start and its CPU."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="starts per row and tree [10]")
    parser.add_argument(
        "--trees", default=str(REPO), help="comma-separated source trees [this checkout]"
    )
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    print(f"{'row':<24}{'tree':<28}{'ready ms':>10}{'min':>7}{'CPU ms':>9}{'min':>7}")
    for row, extra in ROWS.items():
        results: dict[Path, list[tuple[float, float]]] = {tree: [] for tree in trees}
        for k in range(args.runs):
            for tree in trees if k % 2 == 0 else trees[::-1]:
                results[tree].append(start_once(tree, extra))
        for tree, runs in results.items():
            ready = [r for r, _ in runs]
            cpu = [c for _, c in runs]
            print(
                f"{row:<24}{str(tree)[-27:]:<28}"
                f"{statistics.median(ready) * 1000:>10.0f}{min(ready) * 1000:>7.0f}"
                f"{statistics.median(cpu) * 1000:>9.0f}{min(cpu) * 1000:>7.0f}"
            )


if __name__ == "__main__":
    main()
