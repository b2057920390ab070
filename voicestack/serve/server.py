"""The uvicorn server voicestack runs: clean shutdown of SSE streams, direct fan-out, calm GC.

Imported only by `voicestack serve`, so the other commands start without loading the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import socket
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
from rich.console import Console
from starlette.types import ASGIApp

from voicestack.config import Settings
from voicestack.serve.workers import WorkerSocket

if TYPE_CHECKING:
    from voicestack.runtime import Runtime

err = Console(stderr=True, highlight=False, soft_wrap=True)  # one line per error, for logs

# How long in-flight HTTP requests may take to finish after a shutdown signal (thread feeds
# stay open for `--drain-s` longer, while replies finish).
GRACEFUL_SHUTDOWN_S = 10


class VoicestackServer(uvicorn.Server):
    """uvicorn's server, ending SSE streams once a shutdown signal arrives.

    Without this, uvicorn would wait for the endless event streams to end before it ran the
    application's shutdown, so every SIGTERM would last the whole graceful timeout. Query watch
    streams end at once; thread feeds when the reply drain (`--drain-s`) has ended
    (Runtime.begin_shutdown).
    """

    def __init__(
        self, config: uvicorn.Config, settings: Settings, worker: WorkerSocket | None = None
    ) -> None:
        super().__init__(config)
        self.settings = settings
        self.worker = worker
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start serving, then print where (a worker tells its supervisor instead)."""
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self.started and self.worker is not None:
            self.worker.announce_ready()
        elif self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
            where = (
                "an edge: no database file"
                if self.settings.role == "edge"
                else f"database {self.settings.db}"
            )
            err.print(f"voicestack serving [bold]http://{shown}:{port}[/] ({where})")
            state = getattr(_inner_app(self.config.loaded_app), "state", None)
            token = getattr(state, "page_token", None)
            if token:
                # Printed, never logged: the log redacts tokens, this line is for the operator.
                err.print(f"open [bold]http://{shown}:{port}/?token={token}[/]", soft_wrap=True)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's signal capture, without re-raising the signal after a clean shutdown."""
        with super().capture_signals():
            yield
            # A shutdown that completed is a success: exit 0 rather than die of the signal.
            self._captured_signals.clear()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown, after live conversations have ended their current sentence
        (`--drain-s` at most); no new connection is accepted meanwhile."""
        for server in self.servers:
            server.close()
        runtime = self._runtime()
        if runtime is not None:
            await runtime.voice_sessions_ended()
        await super().shutdown(sockets)

    def _runtime(self) -> Runtime | None:
        app = self.config.loaded_app if self.config.loaded else None
        runtime: Runtime | None = getattr(getattr(_inner_app(app), "state", None), "runtime", None)
        return runtime

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler: begin uvicorn's shutdown and the runtime's drain of replies."""
        super().handle_exit(sig, frame)
        runtime = self._runtime()
        if runtime is not None and self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(runtime.begin_shutdown)


def _http_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the direct-write extension, when httptools is there,
    else its h11 protocol; either way with the request header deadline."""
    from voicestack.serve.header_deadline import with_header_deadline

    protocol: type
    try:
        from voicestack.serve.fastpath import FanoutHttpToolsProtocol  # needs httptools
    except ImportError:  # streams keep the task path
        from uvicorn.protocols.http.h11_impl import H11Protocol as protocol
    else:
        protocol = FanoutHttpToolsProtocol
    return with_header_deadline(protocol, header_timeout_s)


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


def run_server(
    asgi_app: ASGIApp, settings: Settings, access_log: bool, worker: WorkerSocket | None = None
) -> bool:
    """Serve `asgi_app` until a shutdown signal; False when the server could not start.

    A worker of `serve --workers` serves on the socket its supervisor bound, not host:port.
    """
    uv_config = uvicorn.Config(
        asgi_app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        access_log=access_log,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S + math.ceil(settings.drain_s),
        lifespan="on",
        http=_http_protocol(settings.header_timeout_s),
        # Live-conversation sockets carry audio and small JSON events: deflating them costs
        # CPU per frame and saves next to nothing.
        ws_per_message_deflate=False,
    )
    server = VoicestackServer(uv_config, settings, worker)
    _settle_garbage_collector()
    server.run(sockets=[worker.sock] if worker is not None else None)
    return server.started
