"""A real OpenAI-compatible HTTP server for tests and benchmarks, in-process or as a CLI.

In-process::

    with FakeOpenAI() as fake:
        fake.script({"text": "Hi there!"})
        client = openai.AsyncOpenAI(base_url=fake.api_base, api_key="test")

As a process: ``python -m voicestack.testing.fake_openai --host 127.0.0.1 --port 9999``
(prints ``fake-openai listening on http://HOST:PORT`` once it accepts connections).
Tests drive it over HTTP with ``POST /_control/script``, ``GET|DELETE /_control/requests``
and ``POST /_control/reset``; see fake_openai.plan.Plan for what a plan can say.
The Realtime WebSocket ``/v1/realtime?model=...`` is scripted through ``fake.realtime`` (or
``/_control/realtime``); see fake_openai.realtime_script.Script.
"""

from __future__ import annotations

import argparse
import logging
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Self

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from voicestack.testing.fake_openai.app import DEFAULT_MODEL, build_app
from voicestack.testing.fake_openai.plan import Kind, Plan, PlanInput, parse_plans
from voicestack.testing.fake_openai.realtime_state import RealtimeState
from voicestack.testing.fake_openai.state import FakeState
from voicestack.testing.fake_openai.wire import StreamCut

__all__ = ["DEFAULT_MODEL", "FakeOpenAI", "Plan", "main"]

_START_TIMEOUT_S = 10.0
_BACKLOG = 4096


class _HideScriptedCuts(logging.Filter):
    """Drops uvicorn's traceback for connections the fake drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record except one reporting a scripted StreamCut."""
        return not (record.exc_info and _is_cut(record.exc_info[1]))


def _is_cut(exc: BaseException | None) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_cut(inner) for inner in exc.exceptions)
    return isinstance(exc, StreamCut)


def _hide_scripted_cuts() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideScriptedCuts) for f in logger.filters):
        logger.addFilter(_HideScriptedCuts())


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listening before uvicorn starts lets early clients queue instead of being refused.
    sock.listen(_BACKLOG)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(state: FakeState, *, log_level: str, in_process: bool) -> uvicorn.Server:
    config = uvicorn.Config(
        build_app(state),
        # In-process, leave the host application's logging configuration alone.
        log_config=None if in_process else LOGGING_CONFIG,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        loop="asyncio" if in_process else "auto",
        backlog=_BACKLOG,
        timeout_graceful_shutdown=1,
    )
    config.load()
    _hide_scripted_cuts()
    return uvicorn.Server(config)


class FakeOpenAI:
    """Runs the fake OpenAI server on a loopback port in a background thread."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning"
    ) -> None:
        """Prepare (not start) a server; port 0 picks a free port."""
        self.state = FakeState()
        self._host, self._port, self._log_level = host, port, log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None

    def start(self) -> str:
        """Start serving and return the base URL (`http://127.0.0.1:PORT`) once it accepts."""
        if self._server is not None:
            raise RuntimeError("FakeOpenAI is already started")
        sock = _listen(self._host, self._port)
        server = _server(self.state, log_level=self._log_level, in_process=True)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fake-openai", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.005)
        self._server, self._thread, self._base_url = server, thread, _url(sock)
        return self._base_url

    def stop(self) -> None:
        """Stop serving and wait for the server thread to end; a no-op when not running."""
        server, thread = self._server, self._thread
        self._server = self._thread = self._base_url = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=_START_TIMEOUT_S)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=_START_TIMEOUT_S)

    @property
    def base_url(self) -> str:
        """The server root, `http://127.0.0.1:PORT`."""
        if self._base_url is None:
            raise RuntimeError("FakeOpenAI is not started")
        return self._base_url

    @property
    def api_base(self) -> str:
        """The URL to give an OpenAI client as base_url: `http://127.0.0.1:PORT/v1`."""
        return f"{self.base_url}/v1"

    def script(self, *plans: PlanInput | Iterable[PlanInput]) -> list[Plan]:
        """Validate and queue plans (dicts, Plans, or lists of them) in order; return them."""
        parsed = parse_plans(plans)
        self.state.add_plans(parsed)
        return parsed

    def requests(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Return logged /v1 requests (kind, path, timestamp, body, headers, client), oldest
        first."""
        return self.state.requests(kind)

    def pending(self, kind: Kind | None = None) -> list[dict[str, Any]]:
        """Return the scripted plans that have not been used up yet."""
        return self.state.pending(kind)

    @property
    def realtime(self) -> RealtimeState:
        """The Realtime WebSocket's scripts and records (`ws://.../v1/realtime?model=...`)."""
        return self.state.realtime

    def clear_requests(self) -> None:
        """Forget logged requests, keeping queued plans."""
        self.state.clear_requests()

    def reset(self) -> None:
        """Forget queued plans and logged requests."""
        self.state.reset()

    def __enter__(self) -> Self:
        """Start the server (if it is not running yet) and return self."""
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake server in the foreground until interrupted; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m voicestack.testing.fake_openai",
        description="Serve a fake OpenAI-compatible API for tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    args = parser.parse_args(argv)
    sock = _listen(args.host, args.port)
    server = _server(FakeState(), log_level=args.log_level, in_process=False)
    print(f"fake-openai listening on {_url(sock)}", flush=True)
    server.run(sockets=[sock])
    return 0
