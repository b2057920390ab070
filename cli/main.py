"""The `voicestack` command: sub-commands are registered here, one module each.

Command modules declare their options with Typer only and import what they run with inside
their commands, so that `voicestack --help` and the database commands start quickly.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from cli import catalog, db, memory, thread, token, usage, user
from cli.eval import eval_command

# `voicestack serve`'s summary, for the root's help (tests/test_cli_help.py keeps it equal to
# the first line of `cli.serve.serve`'s docstring).
SERVE_SUMMARY = "Run the voicestack server."


class RootGroup(TyperGroup):
    """The root group. `serve` has one option per Settings field, so building it loads pydantic
    and the settings model: it is built only to run or to show its own help, and the root's
    help lists a stand-in that has its summary."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return ["serve", *super().list_commands(ctx)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name != "serve":
            return super().get_command(ctx, cmd_name)
        if self._listing:
            return TyperCommand(name="serve", help=SERVE_SUMMARY)
        from cli.serve import serve_command

        return serve_command()

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="voicestack",
    cls=RootGroup,
    help="A self-hostable server for real-time AI voice and chat agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(thread.app, name="thread")
app.add_typer(catalog.tools_app, name="tools")
app.add_typer(catalog.functions_app, name="functions")
app.add_typer(catalog.agents_app, name="agents")
app.add_typer(db.app, name="db")
app.add_typer(memory.app, name="memory")
app.add_typer(token.app, name="token")
app.add_typer(user.app, name="user")
app.command("usage")(usage.usage)
app.command("eval")(eval_command)


@app.callback()
def main() -> None:
    """voicestack: reactive SQLite, persistent agent threads and live streaming over SSE."""


def run() -> None:
    """Console-script entry point."""
    app()
