"""The `voicestack` command: sub-commands are registered here, one module each."""

from __future__ import annotations

import typer

from cli import catalog, db, serve, thread, token

app = typer.Typer(
    name="voicestack",
    help="A self-hostable server for real-time AI voice and chat agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.add_typer(thread.app, name="thread")
app.add_typer(catalog.tools_app, name="tools")
app.add_typer(catalog.functions_app, name="functions")
app.add_typer(db.app, name="db")
app.add_typer(token.app, name="token")


@app.callback()
def main() -> None:
    """voicestack: reactive SQLite, persistent agent threads and live streaming over SSE."""


def run() -> None:
    """Console-script entry point."""
    app()
