"""`voicestack serve`: run the server on a SQLite file until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console

from cli.settings_options import with_settings_options
from voicestack.config import Settings, load_settings
from voicestack.http import create_app
from voicestack.runtime import Runtime

err = Console(stderr=True)

# How long in-flight HTTP requests may take to finish after a shutdown signal.
GRACEFUL_SHUTDOWN_S = 10


class VoicestackServer(uvicorn.Server):
    """uvicorn's server, closing SSE streams as soon as a shutdown signal arrives.

    Without this, uvicorn would wait for the endless event streams to end before it ran the
    application's shutdown, so every SIGTERM would last the whole graceful timeout.
    """

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list | None = None) -> None:
        """Start serving, then print where."""
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
            err.print(
                f"voicestack serving [bold]http://{shown}:{port}[/] (database {self.settings.db})"
            )

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's signal capture, without re-raising the signal after a clean shutdown."""
        with super().capture_signals():
            yield
            # A shutdown that completed is a success: exit 0 rather than die of the signal.
            self._captured_signals.clear()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler: begin uvicorn's shutdown and end every SSE stream."""
        super().handle_exit(sig, frame)
        app = self.config.loaded_app if self.config.loaded else None
        runtime = getattr(getattr(_inner_app(app), "state", None), "runtime", None)
        if runtime is not None and self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(runtime.hub.close_streams)


def _http_protocol() -> dict[str, type]:
    """uvicorn's httptools protocol with the direct-write extension, when httptools is there."""
    try:
        from voicestack.http.fastpath import FanoutHttpToolsProtocol  # needs httptools
    except ImportError:
        return {}  # uvicorn's h11 protocol; streams keep the task path
    return {"http": FanoutHttpToolsProtocol}


def _settle_garbage_collector() -> None:
    # Everything loaded so far lives as long as the server: freezing it keeps full collections
    # from walking it again, and larger thresholds stop per-event garbage from triggering a
    # stop-the-world pass in the middle of a fan-out (measured: a 230 ms pause at 5,000 SSE
    # subscribers without this; bench/fanout.py).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _inner_app(app: object) -> object:
    # uvicorn wraps the app in its proxy-headers and message-logger middlewares.
    while hasattr(app, "app"):
        app = app.app
    return app


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
    try:
        runtime = Runtime(settings)
    except Exception as exc:  # a bad --app, an unreadable database: one line, not a traceback
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    asgi_app = create_app(settings, runtime)
    uv_config = uvicorn.Config(
        asgi_app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        access_log=access_log,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
        **_http_protocol(),
    )
    server = VoicestackServer(uv_config, settings)
    _settle_garbage_collector()
    server.run()
    if not server.started:
        raise typer.Exit(1)
