"""Options shared by several commands. Light on purpose: every command module imports this to
declare its signature, and `voicestack --help` should load nothing more than Typer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_DB = Path("voicestack.db")

ServerOption = Annotated[
    str,
    typer.Option(
        "--server",
        envvar="VOICESTACK_URL",
        help="The server's URL.",
        show_envvar=True,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="VOICESTACK_TOKEN",
        help="API token, sent as `Authorization: Bearer TOKEN`.",
        show_envvar=True,
        show_default=False,
    ),
]
DbOption = Annotated[
    Path,
    typer.Option(
        "--db", envvar="VOICESTACK_DB", help="The SQLite database file.", show_envvar=True
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of a table.", show_default=False)
]
