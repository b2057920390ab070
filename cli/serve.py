"""`voicestack serve`: run the server on a SQLite file until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from cli.settings_options import with_settings_options
from voicestack.config import load_settings


def serve_command() -> Any:
    """`serve` as a click command of its own, for the root group to run (cli.main.RootGroup)."""
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("serve")(serve)
    return typer.main.get_command(app)


err = Console(stderr=True, highlight=False, soft_wrap=True)  # one line per error, for logs


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

    Sign-in (README, Sign-in) with Google: --oidc-issuer https://accounts.google.com
    or Keycloak: --oidc-issuer https://keycloak.example.com/realms/NAME
    and --oidc-client-id ID --oidc-client-secret SECRET --public-url https://voice.example.com
    """
    from voicestack.serve import workers  # the server stack loads only for `serve`

    try:
        settings = load_settings(config, **flags)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.role == "edge":
        _serve_edge(settings, access_log)
        return
    worker = workers.inherited_socket()  # set when this process is one of `--workers N`
    page_token = _prepare_tokens(settings) if worker is None else None  # once, in the parent
    if worker is None and settings.workers > 1:
        raise typer.Exit(workers.supervise(settings, page_token))
    from voicestack.http import create_app
    from voicestack.runtime import Runtime
    from voicestack.serve.server import run_server

    try:
        runtime = Runtime(settings)
    except Exception as exc:  # a bad --app or agent, an unreadable database: one line
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    services = []
    if settings.role == "primary":
        from voicestack.scale.primary import serve_edges

        assert settings.nats is not None  # Settings checks it
        services.append(serve_edges(settings.nats))
    asgi_app = create_app(settings, runtime, services)
    asgi_app.state.page_token = page_token
    if not run_server(asgi_app, settings, access_log, worker):
        raise typer.Exit(1)


def _serve_edge(settings: Any, access_log: bool) -> None:
    """An edge: no database file, no tokens of its own; the primaries answer for both."""
    from voicestack.scale.edge_app import create_edge_app
    from voicestack.serve.server import run_server

    if not run_server(create_edge_app(settings), settings, access_log):
        raise typer.Exit(1)


def _prepare_tokens(settings: Any) -> str | None:
    """Create the first admin token on a database without users; refuse a public address while
    no token is valid; return the token the printed page URL carries (None: print none)."""
    from voicestack.serve.first_admin import is_loopback, prepare_auth, token_file

    try:
        state = prepare_auth(settings.db)
    except Exception as exc:  # an unreadable or newer database: one line, not a traceback
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    if state.active_tokens == 0 and not is_loopback(settings.host):
        err.print(
            f"[red]error:[/] refusing to listen on {settings.host}: no token is valid, so"
            " anyone could call the API. Create one first:"
            f" voicestack token create --user NAME --admin --db {settings.db}"
        )
        raise typer.Exit(2)
    if state.created:
        err.print(f"created the first admin token; it is kept in {token_file(settings.db)}")
    elif state.page_token is None and not settings.quiet_token:
        err.print(
            f"no valid token in {token_file(settings.db)} to print the page URL with;"
            " `voicestack token create --user NAME` makes one"
        )
    return None if settings.quiet_token else state.page_token
