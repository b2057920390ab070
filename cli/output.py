"""Where command output goes: rich on a terminal, plain lines in a pipe, JSON when asked.

Plain output is tab-separated and unwrapped (one record a line, no header) so that `cut`, `awk`
and `grep` work on it; a terminal gets tables and colour. Messages for the person (progress,
notes) go to stderr, so stdout stays clean for pipes.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table


def pretty_json(value: Any) -> str:
    """`value` as indented JSON, keys in the server's order."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def one_line(text: str | None, limit: int | None = None) -> str:
    """`text` with every run of whitespace as one space, cut to `limit` characters with '…'."""
    flat = " ".join((text or "").split())
    if limit is not None and len(flat) > limit:
        return flat[: limit - 1] + "…"
    return flat


def iso_time(timestamp: float | None) -> str:
    """A stored time as ISO 8601 UTC to the second ('' for None)."""
    if timestamp is None:
        return ""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Output:
    """The command's stdout (and stderr for notes), rich when stdout is a terminal."""

    def __init__(self) -> None:
        self.console = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    @property
    def terminal(self) -> bool:
        """True when stdout is a terminal (or rich was told to treat it as one)."""
        return self.console.is_terminal

    def line(self, text: str = "") -> None:
        """Write `text` and a newline to stdout as it is (no markup, no wrapping)."""
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def json(self, value: Any) -> None:
        """Write `value` as indented JSON."""
        self.line(pretty_json(value))

    def note(self, text: str) -> None:
        """A note for the person on stderr (rich markup allowed)."""
        self.err.print(text)

    def table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[str]],
        total: Sequence[str] | None = None,
    ) -> None:
        """Rows as a table on a terminal, else as tab-separated lines without a header; a
        `total` row comes last, set apart in bold on a terminal."""
        if not self.terminal:
            for row in [*rows, *([total] if total is not None else [])]:
                self.line("\t".join(one_line(cell) for cell in row))
            return
        table = Table(
            *columns,
            box=box.SIMPLE_HEAD if total is None else box.SIMPLE,
            header_style="bold",
            pad_edge=False,
            show_footer=total is not None,
            footer_style="bold",
        )
        for column, cell in zip(table.columns, total or (), strict=False):
            column.footer = cell
        for row in rows:
            table.add_row(*row)
        self.console.print(table)

    def when(self, timestamp: float | None) -> str:
        """A stored time: local and short on a terminal, ISO 8601 UTC in plain output."""
        if timestamp is None or not self.terminal:
            return iso_time(timestamp)
        return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")
