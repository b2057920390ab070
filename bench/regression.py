"""No regression: `bench/stream.py` and `bench/voice.py` from several source trees, in turn.

Issue 14 asks that the performance work leave two benches no worse:
- `bench/stream.py`: 1,000 concurrent replies at 50 tokens/s, one feed each;
- `bench/voice.py`: what voicestack adds to a push-to-talk turn's first delta and first speech
  event.

Both run from each tree in turn, each tree with its own copy of both benches, its own fake
provider and its own server. Every set runs the trees in order, then in reverse (A B B A for
two), so that the machine's state weighs on each alike. The report gives each run's figures and
their medians per tree.

A tree is a directory, or a revision of this checkout. A revision is exported with `git archive`
into a temporary directory, with its bytecode written (as `make test` writes it).

    python -m bench.regression --trees d9eb235,HEAD          # 2 sets: 4 runs of each bench a tree
    python -m bench.regression --trees /tmp/a,/tmp/b --sets 3 --replies 100
    python -m bench.regression --trees d9eb235,HEAD --only voice --out /tmp/voice.md

The benches' own figures are documented in their modules. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 1800
STREAM_FIGURES: dict[str, Callable[[dict[str, Any]], float]] = {
    "token emit→receive p50 (ms)": lambda r: r["figures"]["emit_to_receive"]["p50"],
    "token emit→receive p99 (ms)": lambda r: r["figures"]["emit_to_receive"]["p99"],
    "server CPU per token (µs)": lambda r: r["server_us_per_token"],
    "median reply start→finish (s)": lambda r: r["figures"]["reply_wall"]["p50"] / 1000,
    "tokens/s a reply achieved, p50": lambda r: r["figures"]["achieved_tokens_per_s_p50"],
}
VOICE_FIGURES: dict[str, str] = {
    "adds to the first delta, median (ms)": "voicestack adds to the first delta",
    "adds to the first speech event, median (ms)": "voicestack adds to the first speech",
}


@dataclass
class Tree:
    """A source tree the benches run from, and the name it is reported by."""

    name: str
    path: Path
    runs: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, bench: str, figures: dict[str, float]) -> None:
        """Record one run's figures."""
        table = self.runs.setdefault(bench, {})
        for figure, value in figures.items():
            table.setdefault(figure, []).append(value)


@contextlib.contextmanager
def trees_of(specs: list[str]) -> Iterator[list[Tree]]:
    """The trees named by `specs` (directories as they are, revisions exported), removing the
    exports afterwards."""
    with tempfile.TemporaryDirectory(prefix="regression-") as tmp:
        trees = []
        for spec in specs:
            if Path(spec).is_dir():
                trees.append(Tree(spec, Path(spec).resolve()))
            else:
                trees.append(Tree(spec, export(spec, Path(tmp) / f"tree{len(trees)}")))
        yield trees


def export(revision: str, into: Path) -> Path:
    """`revision` of this checkout, extracted into `into` with its bytecode written."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise SystemExit(f"git archive {revision}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    sources = [str(into / d) for d in ("voicestack", "cli", "bench") if (into / d).is_dir()]
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", *sources], check=True)
    return into


def run_bench(tree: Tree, module: str, args: list[str]) -> str:
    """Run `python -m MODULE ARGS` from `tree` (its own bench and server); its standard output."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tree.path)
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=tree.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-15:])
        raise SystemExit(f"{module} from {tree.name} exited {done.returncode}:\n{tail}")
    return done.stdout


def stream_figures(stdout: str) -> dict[str, float]:
    """The figures of one `bench.stream --json` run of one (K, S)."""
    (result,) = json.loads(stdout)["results"]
    return {name: float(pick(result)) for name, pick in STREAM_FIGURES.items()}


def voice_figures(stdout: str) -> dict[str, float]:
    """The medians `bench.voice` printed for what voicestack adds."""
    figures = {}
    for name, label in VOICE_FIGURES.items():
        match = re.search(rf"^{re.escape(label)}\s+([0-9.]+)", stdout, re.MULTILINE)
        if match is None:
            raise SystemExit(f"bench.voice printed no line {label!r}:\n{stdout}")
        figures[name] = float(match.group(1))
    return figures


def report(trees: list[Tree], benches: dict[str, str], when: str) -> str:
    """A markdown table per bench: each tree's runs in order and their median."""
    lines = [
        f"Runs {when} UTC; each set ran the trees in order, then in reverse. Each cell lists a"
        " tree's runs in order."
    ]
    for bench, command in benches.items():
        lines += ["", f"### `{command}`", "", "| figure | tree | each run | median |"]
        lines.append("|---|---|---|---|")
        for figure in trees[0].runs[bench]:
            for tree in trees:
                values = tree.runs[bench][figure]
                each = ", ".join(f"{v:,.1f}" for v in values)
                lines.append(
                    f"| {figure} | {tree.name} | {each} | {statistics.median(values):,.1f} |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the benches from every tree in ABBA sets and print (or write) the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", required=True, help="comma-separated directories or revisions")
    parser.add_argument("--sets", type=int, default=2, help="ABBA sets [2]")
    parser.add_argument("--replies", type=int, default=1000, help="bench.stream's K [1000]")
    parser.add_argument("--voice-runs", type=int, default=10, help="bench.voice's --runs [10]")
    parser.add_argument("--only", choices=["stream", "voice"], help="one bench of the two")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    specs = [s.strip() for s in args.trees.split(",") if s.strip()]
    if len(specs) < 2 or args.sets < 1:
        parser.error("--trees names two trees or more, and --sets is at least 1")
    stream_args = ["--replies", str(args.replies), "--subscribers", "1", "--json"]
    voice_args = ["--runs", str(args.voice_runs)]
    benches = {
        "stream": ("bench.stream", stream_args, stream_figures),
        "voice": ("bench.voice", voice_args, voice_figures),
    }
    chosen = {k: v for k, v in benches.items() if args.only in (None, k)}
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    with trees_of(specs) as trees:
        for bench, (module, bench_args, parse) in chosen.items():
            for _ in range(args.sets):
                for tree in [*trees, *reversed(trees)]:
                    print(f"{module} from {tree.name} ...", file=sys.stderr, flush=True)
                    tree.add(bench, parse(run_bench(tree, module, bench_args)))
    ended = time.strftime("%H:%M", time.gmtime())
    commands = {k: f"python -m {m} {' '.join(a)}" for k, (m, a, _) in chosen.items()}
    text = report(trees, commands, f"{started}–{ended}")
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
