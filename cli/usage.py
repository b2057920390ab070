"""`voicestack usage`: what conversations used and cost, from the query `usage.summary`."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import typer

from cli.errors import USAGE, CliError, reports_errors
from cli.options import DEFAULT_URL, JsonOption, ServerOption, TokenOption

GROUPS = ("agent", "model", "day", "user")
_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

ByOption = Annotated[
    str,
    typer.Option("--by", help=f"Group by {', '.join(GROUPS)} (day: UTC; user: thread owner)."),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only turns from then on: a time ago (30m, 24h, 7d, 2w) or an ISO 8601 date or time.",
        show_default=False,
    ),
]
UntilOption = Annotated[
    str | None,
    typer.Option(
        "--until",
        help="Only turns before then: a time ago (1d) or an ISO 8601 date or time.",
        show_default=False,
    ),
]


def moment(text: str | None, option: str, now: float) -> float | str | None:
    """`--since`/`--until` as the query takes it: unix seconds for a time ago (`7d`), an ISO
    8601 text as it is (the server reads it)."""
    if text is None:
        return None
    ago = _AGO.fullmatch(text.strip())
    if ago:
        return now - float(ago[1]) * _UNIT_S[ago[2]]
    if text[:1].isdigit() and "-" in text:
        return text
    raise CliError(
        f"{option} takes a time ago such as 7d, 24h or 30m, or a date such as 2026-12-01,"
        f" not {text!r}.",
        USAGE,
    )


def _cost(value: float | None, terminal: bool) -> str:
    if value is None:
        return "no price" if terminal else ""
    return f"${value:.4f}" if terminal else repr(value)


def _cells(key: str, usage: dict[str, Any], terminal: bool) -> list[str]:
    return [
        key,
        str(usage["replies"]),
        str(usage["promptTokens"]),
        str(usage["completionTokens"]),
        str(usage["toolCalls"]),
        f"{usage['audioInSeconds']:g}",
        str(usage["speechChars"]),
        f"{usage['speechSeconds']:g}",
        _cost(usage["costUsd"], terminal),
    ]


@reports_errors
def usage(
    by: ByOption = "agent",
    since: SinceOption = None,
    until: UntilOption = None,
    as_json: JsonOption = False,
    server: ServerOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Show tokens, tool calls, audio, speech and cost per agent, model, day or user, with totals.

    An admin sees every thread; another user, the threads they own.

    A cost reads "no price" when a model it used has no price in the server's voicestack.toml.

    Example: voicestack usage --by agent --since 7d
    """
    from cli.client import ApiClient  # httpx loads only when a command runs
    from cli.output import Output

    if by not in GROUPS:
        raise CliError(f"--by takes one of {', '.join(GROUPS)}, not {by!r}.", USAGE)
    now = time.time()
    args = {
        "by": by,
        "since": moment(since, "--since", now),
        "until": moment(until, "--until", now),
    }
    with ApiClient(server, token) as api:
        summary = api.post("/api/query/usage.summary", {"args": args})["value"]
    out = Output()
    if as_json:
        out.json(summary)
        return
    terminal = out.terminal
    rows = [
        _cells(row["key"] if row["key"] is not None else "", row, terminal)
        for row in summary["rows"]
    ]
    columns = [
        by,
        "replies",
        "input tokens",
        "output tokens",
        "tool calls",
        "audio in s",
        "speech chars",
        "speech s",
        "cost",
    ]
    out.table(columns, rows, total=_cells("total", summary["total"], terminal))
