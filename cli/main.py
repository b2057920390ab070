"""The `voicestack` command: sub-commands are registered here, one module each."""

from __future__ import annotations

import typer

from cli import serve

app = typer.Typer(
    name="voicestack",
    help="A self-hostable server for real-time AI voice and chat agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)


@app.callback()
def main() -> None:
    """voicestack: reactive SQLite, persistent agent threads and live streaming over SSE."""


def run() -> None:
    """Console-script entry point."""
    app()
