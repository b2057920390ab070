"""`voicestack serve`: run the server on a SQLite file until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from cli.settings_options import with_settings_options
from voicestack.config import load_settings

err = Console(stderr=True)


@with_settings_options
def serve(
    config: Annotated[
        Path | None, typer.Option(help="TOML config file [default: ./voicestack.toml if present].")
    ] = None,
    access_log: Annotated[bool, typer.Option(help="Log every HTTP request.")] = True,
    **flags: Any,
) -> None:
    """Run the voicestack server.

    Example: voicestack serve --port 8000 --db ./voicestack.db --app voicestack.examples.todos
    """
    try:
        settings = load_settings(config, **flags)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from cli.uvicorn_server import run_server  # the server stack loads only for `serve`
    from voicestack.http import create_app
    from voicestack.runtime import Runtime

    try:
        runtime = Runtime(settings)
    except Exception as exc:  # a bad --app, an unreadable database: one line, not a traceback
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    asgi_app = create_app(settings, runtime)
    if not run_server(asgi_app, settings, access_log):
        raise typer.Exit(1)
