"""`voicestack tools list` and `voicestack functions list`: what a running server offers."""

from __future__ import annotations

import typer

from cli.errors import reports_errors
from cli.options import DEFAULT_URL, JsonOption, ServerOption, TokenOption
from cli.output import Output, one_line

tools_app = typer.Typer(help="The model's tools on a server (tool plugins).", no_args_is_help=True)
functions_app = typer.Typer(help="The server functions on a server.", no_args_is_help=True)


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
    from cli.client import ApiClient  # httpx loads only when a command runs

    with ApiClient(server, token) as api:
        tools = api.get("/api/tools")
    out = Output()
    if as_json:
        out.json(tools)
        return
    rows = [
        [
            tool.get("plugin") or "",
            tool["name"],
            tool.get("status") or "loaded",
            one_line(tool.get("error") or "", None if not out.terminal else 120),
        ]
        for tool in tools
    ]
    if not rows:  # the note goes to stderr, so a pipe still reads no rows
        out.note("No tools are loaded (install a tool plugin, or check VOICESTACK_LOAD_TOOLS).")
        return
    out.table(["plugin", "name", "status", "error"], rows)


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
    from cli.client import ApiClient  # httpx loads only when a command runs

    with ApiClient(server, token) as api:
        functions = api.get("/api/functions")
    out = Output()
    if as_json:
        out.json(functions)
        return
    rows = [
        [
            fn["name"],
            fn.get("kind") or "",
            fn.get("app") or "",
            one_line(fn.get("description") or "", 80 if out.terminal else None),
        ]
        for fn in functions
    ]
    out.table(["name", "kind", "app", "description"], rows)
