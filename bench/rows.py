"""Benchmarks whose rows are set-ups run in turn: run each row --repeat times, then take the
medians of each row's runs."""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bench.peers_servers import Fake

Row = dict[str, Any]
RunRow = Callable[[Path, Fake, str], Awaitable[Row]]


async def run_rows(prefix: str, names: Sequence[str], repeat: int, run: RunRow) -> list[Row]:
    """`run(work, fake, name)` for every name, the whole sequence `repeat` times, in a fresh
    work directory with one fake provider; each row is printed to stderr as it comes."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    fake = Fake(work)
    rows = []
    try:
        for _ in range(repeat):
            for name in names:
                rows.append(await run(work, fake, name))
                print(rows[-1], file=sys.stderr, flush=True)
    finally:
        fake.stop()
    return rows


def medians(rows: list[Row], key: str, name: str) -> tuple[dict[str, float], int]:
    """The median of every figure over the rows whose `key` is `name`, and how many they are."""
    runs = [row for row in rows if row[key] == name]
    figures = {k: statistics.median(row[k] for row in runs) for k in runs[0] if k != key}
    return figures, len(runs)
