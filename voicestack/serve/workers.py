"""`voicestack serve --workers N`: one listening socket, N server processes sharing it.

The parent binds the port once and starts N workers. Each worker is a fresh `voicestack serve`
process with the same command line (re-executed, never forked: apsw connections and threads must
not cross a fork), which builds its own Runtime and serves on the inherited socket. Commits made
by one worker reach the others' subscribers through the database (`PRAGMA data_version` and the
`_changes` log), as between separate servers on one file.

The parent only supervises: it forwards SIGINT and SIGTERM, replaces a worker that dies while
serving, and exits 0 when every worker exited 0 after the stop signal.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from rich.console import Console

from voicestack.config import Settings

log = logging.getLogger("voicestack.workers")
err = Console(stderr=True, highlight=False, soft_wrap=True)  # one line per error, for logs

# What a worker inherits: "LISTEN_FD:READY_FD:INDEX". Removed from the worker's environment as
# soon as it is read, so no process a worker starts takes itself for a worker.
WORKER_ENV = "_VOICESTACK_WORKER"
BACKLOG = 2048
# A replacement for a worker that died is started at most this often per worker slot, so a
# worker that cannot start (a full disk, a broken app) does not spin the machine.
RESTART_INTERVAL_S = 1.0
POLL_S = 0.1
# After a stop signal: the workers' own graceful timeout plus their reply drain, then this margin
# before the parent gives up on a worker and kills it.
STOP_MARGIN_S = 5.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class WorkerSocket:
    """What a worker process got from its supervisor: the listening socket and a ready pipe."""

    index: int
    sock: socket.socket
    ready_fd: int

    def announce_ready(self) -> None:
        """Tell the supervisor that this worker serves (call once, after the server started)."""
        with contextlib.suppress(OSError):  # the supervisor is gone: nothing to tell
            os.write(self.ready_fd, b"1")
        with contextlib.suppress(OSError):
            os.close(self.ready_fd)


def inherited_socket() -> WorkerSocket | None:
    """The socket to serve on when this process is a worker of `serve --workers`, else None."""
    marker = os.environ.pop(WORKER_ENV, None)
    if marker is None:
        return None
    listen_fd, ready_fd, index = (int(part) for part in marker.split(":"))
    return WorkerSocket(index, socket.socket(fileno=listen_fd), ready_fd)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port that child processes inherit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def worker_command() -> list[str]:
    """The command line that started this `serve`, as a fresh process runs it."""
    if getattr(sys, "frozen", False):  # the one-file binary: the executable is the command
        return [sys.executable, *sys.argv[1:]]
    return [sys.executable, "-m", "voicestack", *sys.argv[1:]]


def _parent_death_signal() -> Callable[[], None] | None:
    # Runs in the child between fork and exec: a worker whose supervisor is killed outright
    # (SIGKILL, out of memory) gets SIGTERM and drains, instead of serving on as an orphan.
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None

    def set_signal() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return set_signal


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    ready_fd: int
    started: float
    ready: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid


class Supervisor:
    """Runs `count` workers on one socket until a stop signal; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        sock: socket.socket,
        command: list[str],
        page_token: str | None = None,
    ) -> None:
        self.settings = settings
        self.page_token = page_token
        self.sock = sock
        self.command = command
        self.count = settings.workers
        self.workers: dict[int, _Worker] = {}
        self.exit_codes: dict[int, int] = {}
        self.stopping = False
        self._stop_deadline = math.inf
        self._stop_grace_s = _worker_grace_s(settings) + STOP_MARGIN_S
        self._signalled: set[int] = set()
        self._preexec = _parent_death_signal()

    def run(self) -> int:
        """Start the workers, supervise them until they have all exited; the exit code."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            return self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for worker in self.workers.values():  # only after a failure of the parent itself
                with contextlib.suppress(OSError):
                    worker.process.kill()
            self.sock.close()

    def _run(self) -> int:
        # The first worker starts alone: it applies pending migrations before the others open
        # the file, and a broken --app fails once, not N times.
        self._start(0)
        if not self._wait_until_ready() or self.stopping:
            return self._finish()
        for index in range(1, self.count):
            self._start(index)
        if not self._wait_until_ready() or self.stopping:
            return self._finish()
        host, port = self.sock.getsockname()[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
        err.print(
            f"voicestack serving [bold]http://{shown}:{port}[/] (database {self.settings.db},"
            f" {self.count} workers)",
            soft_wrap=True,
        )
        if self.page_token:
            err.print(
                f"open [bold]http://{shown}:{port}/?token={self.page_token}[/]", soft_wrap=True
            )
        while not self.stopping:
            self._step()
            for worker in list(self.workers.values()):
                code = worker.process.poll()
                if code is not None and not self.stopping:
                    self._replace(worker, code)
        return self._finish()

    def _start(self, index: int) -> _Worker:
        ready_r, ready_w = os.pipe()
        env = dict(os.environ)
        env[WORKER_ENV] = f"{self.sock.fileno()}:{ready_w}:{index}"
        try:
            process = subprocess.Popen(
                self.command,
                env=env,
                pass_fds=(self.sock.fileno(), ready_w),
                preexec_fn=self._preexec,
            )
        finally:
            os.close(ready_w)
        worker = _Worker(index, process, ready_r, time.monotonic())
        self.workers[index] = worker
        log.info("worker %d (pid %d) starting", index, worker.pid)
        return worker

    def _wait_until_ready(self) -> bool:
        """Wait until every worker serves; False when one exited first (the others stop)."""
        while not self.stopping and not all(w.ready for w in self.workers.values()):
            self._step()
            for worker in self.workers.values():
                code = worker.process.poll()
                if code is not None and not worker.ready:
                    err.print(
                        f"[red]error:[/] worker {worker.index} exited with code {code} before it"
                        " could serve"
                    )
                    self._stop_all(signal.SIGTERM)
                    self.exit_codes[worker.index] = code or 1
                    return False
        return True

    def _step(self) -> None:
        """Wait up to POLL_S for a worker to announce that it serves."""
        waiting = {w.ready_fd: w for w in self.workers.values() if w.ready_fd >= 0}
        if not waiting:
            time.sleep(POLL_S)
            return
        readable, _, _ = select.select(list(waiting), [], [], POLL_S)
        for fd in readable:
            worker = waiting[fd]
            # A byte: the worker serves. End of file without one: it is exiting (poll tells).
            if os.read(fd, 1):
                worker.ready = True
                log.info("worker %d (pid %d) serving", worker.index, worker.pid)
            os.close(fd)
            worker.ready_fd = -1

    def _replace(self, worker: _Worker, code: int) -> None:
        if worker.ready_fd >= 0:
            os.close(worker.ready_fd)
        wait = worker.started + RESTART_INTERVAL_S - time.monotonic()
        log.warning(
            "worker %d (pid %d) exited with code %d; starting a new one",
            worker.index,
            worker.pid,
            code,
        )
        if wait > 0:
            time.sleep(wait)  # a stop signal during the wait is handled by the next check
        if not self.stopping:
            self._start(worker.index)
        else:
            del self.workers[worker.index]

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
            self._stop_deadline = time.monotonic() + self._stop_grace_s
            log.info("stopping %d workers", len(self.workers))
            # SIGTERM, whatever arrived: a worker that also got the terminal's SIGINT must not
            # take a second SIGINT for "stop now, skip the drain".
            self._stop_all(signal.SIGTERM)
        elif sig == signal.SIGINT:
            self._stop_all(signal.SIGINT)  # a second Ctrl-C: stop at once, as one server does

    def _stop_all(self, sig: int, only_new: bool = False) -> None:
        for worker in self.workers.values():
            if only_new and worker.pid in self._signalled:
                continue
            self._signalled.add(worker.pid)
            if worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(sig)

    def _finish(self) -> int:
        """Wait for every worker to exit (killing those past the deadline); the exit code."""
        self.stopping = True
        if self._stop_deadline == math.inf:
            self._stop_deadline = time.monotonic() + self._stop_grace_s
        self._stop_all(signal.SIGTERM, only_new=True)  # one started while the handler ran
        for worker in self.workers.values():
            remaining = max(0.0, self._stop_deadline - time.monotonic())
            try:
                # Popen.wait resumes after a signal handler ran, so a second Ctrl-C is forwarded.
                code = worker.process.wait(remaining)
            except subprocess.TimeoutExpired:
                log.error(
                    "worker %d (pid %d) did not stop in time: killed", worker.index, worker.pid
                )
                worker.process.kill()
                code = worker.process.wait()
            if worker.ready_fd >= 0:
                os.close(worker.ready_fd)
                worker.ready_fd = -1
            if code == -signal.SIGTERM and not worker.ready:
                code = 0  # stopped while it started: it had nothing to drain yet
            self.exit_codes.setdefault(worker.index, code)
        return 0 if all(code == 0 for code in self.exit_codes.values()) else 1


def _worker_grace_s(settings: Settings) -> float:
    from voicestack.serve.server import GRACEFUL_SHUTDOWN_S

    return GRACEFUL_SHUTDOWN_S + math.ceil(settings.drain_s)


def supervise(settings: Settings, page_token: str | None = None) -> int:
    """Serve with `settings.workers` processes until SIGINT or SIGTERM; the exit code.

    `page_token`, when given, is printed in the page's URL once every worker serves.

    1 when the port cannot be bound, when a worker fails to start, or when a worker did not
    exit 0 after the stop signal; 0 otherwise.
    """
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        err.print(f"[red]error:[/] cannot listen on {settings.host}:{settings.port}: {exc}")
        return 1
    return Supervisor(settings, sock, worker_command(), page_token).run()
