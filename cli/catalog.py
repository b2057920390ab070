"""`voicestack tools list`, `functions list` and `agents list`: what a running server offers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from cli.errors import reports_errors
from cli.options import DEFAULT_URL, JsonOption, ServerOption, TokenOption
from cli.output import Output, one_line

tools_app = typer.Typer(help="The model's tools on a server (tool plugins).", no_args_is_help=True)
functions_app = typer.Typer(help="The server functions on a server.", no_args_is_help=True)
agents_app = typer.Typer(
    help="The agents on a server: assistant (the serve flags), the config file's and the apps'.",
    no_args_is_help=True,
)


@tools_app.command("list")
@reports_errors
def list_tools(
    as_json: JsonOption = False,
    server: ServerOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """List tools: plugin, name, status (loaded or failed) and the load error if any.

    Example: voicestack tools list --server http://127.0.0.1:8000
    """
    _print_listing(
        "/api/tools",
        server,
        token,
        as_json,
        ["plugin", "name", "status", "error"],
        lambda tool, terminal: [
            tool.get("plugin") or "",
            tool["name"],
            tool.get("status") or "loaded",
            one_line(tool.get("error") or "", 120 if terminal else None),
        ],
        empty_note="No tools are loaded (install a tool plugin, or check VOICESTACK_LOAD_TOOLS).",
    )


@functions_app.command("list")
@reports_errors
def list_functions(
    as_json: JsonOption = False,
    server: ServerOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """List server functions: name, kind (query, mutation, action), app and description.

    Example: voicestack functions list --json | jq '.[].name'
    """
    _print_listing(
        "/api/functions",
        server,
        token,
        as_json,
        ["name", "kind", "app", "description"],
        lambda fn, terminal: [
            fn["name"],
            fn.get("kind") or "",
            fn.get("app") or "",
            one_line(fn.get("description") or "", 80 if terminal else None),
        ],
    )


@agents_app.command("list")
@reports_errors
def list_agents(
    as_json: JsonOption = False,
    server: ServerOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """List agents: name, model, voice, tools ("all": every tool), handoffs and description.

    Example: voicestack agents list --server http://127.0.0.1:8000
    """
    _print_listing(
        "/api/agents",
        server,
        token,
        as_json,
        ["name", "model", "voice", "tools", "handoffs", "description"],
        lambda agent, terminal: [
            agent["name"],
            agent.get("model") or "",
            agent.get("voice") or "",
            "all" if agent.get("tools") is None else ", ".join(agent["tools"]) or "none",
            ", ".join(agent.get("handoffs") or ()),
            one_line(agent.get("description") or "", 80 if terminal else None),
        ],
    )


# One listed item as a table row; the flag says whether stdout is a terminal.
ItemRow = Callable[[dict[str, Any], bool], list[str]]


def _print_listing(
    path: str,
    server: str,
    token: str | None,
    as_json: bool,
    columns: list[str],
    row: ItemRow,
    empty_note: str | None = None,
) -> None:
    """Print the list at `path` on the server: as JSON, or a row per item under `columns`."""
    from cli.client import ApiClient  # httpx loads only when a command runs

    with ApiClient(server, token) as api:
        items = api.get(path)
    out = Output()
    if as_json:
        out.json(items)
        return
    rows = [row(item, out.terminal) for item in items]
    if not rows and empty_note is not None:
        out.note(empty_note)  # to stderr, so a pipe still reads no rows
        return
    out.table(columns, rows)
