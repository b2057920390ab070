"""CLI start-up: how long `voicestack --help` and the host-side database commands take, whole.

Each command runs `--runs` times as a fresh process of this interpreter (the console script's
own code path, `cli.main:run`, without any shell wrapper such as a pyenv shim in front of it),
on a small database made first in a temporary directory. Beside them, `python -c pass` gives the
interpreter's own start, and "typer's floor" what Typer itself imports for any command with
options; no command can beat either. Medians and minimums, in milliseconds.

    python -m bench.cli_startup                 # 15 runs each
    python -m bench.cli_startup --runs 31
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TYPER_FLOOR = "import typer, typer._adapters, rich.console"
RUN_CLI = "import sys; from cli.main import run; sys.argv[0] = 'voicestack'; run()"


def timed(command: list[str], cwd: Path, runs: int) -> tuple[float, float]:
    """(median, minimum) wall-clock milliseconds of `command` over `runs` runs."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, cwd=cwd, capture_output=True, check=True)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000, min(seconds) * 1000


def main() -> None:
    """Print one row per command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cli = [sys.executable, "-c", RUN_CLI]
        subprocess.run(
            [*cli, "token", "create", "--user", "ana"], cwd=workdir, check=True, capture_output=True
        )
        rows = {
            "python -c pass": [sys.executable, "-c", "pass"],
            # What any Typer command with options imports before our code runs: Typer coerces
            # every parameter through pydantic (typer._adapters), and prints with rich.
            "import typer's floor": [sys.executable, "-c", TYPER_FLOOR],
            "voicestack --help": [*cli, "--help"],
            "voicestack token --help": [*cli, "token", "--help"],
            "voicestack token list": [*cli, "token", "list"],
            "voicestack db check": [*cli, "db", "check"],
            "voicestack serve --help": [*cli, "serve", "--help"],
        }
        print(f"{'command':<26}{'median ms':>10}{'min ms':>9}   ({runs} runs, {repo.name})")
        for name, command in rows.items():
            median, fastest = timed(command, workdir, runs)
            print(f"{name:<26}{median:>10.0f}{fastest:>9.0f}")


if __name__ == "__main__":
    main()
