"""The `voicestack` command as tests use it: in-process through Typer's CliRunner, or as a real
subprocess whose output a test reads while it streams.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import apsw
from typer.testing import CliRunner, Result

from cli.main import app
from tests.support.server import REPO, ServerProcess, server_env


def ctrl_c_as_in_a_terminal() -> None:
    """In a CLI's child process, before it starts: Ctrl-C (SIGINT) interrupts it as in a terminal.
    Run in the background of a shell without job control (`make test &` in a script), the tests
    and their children start with SIGINT ignored, and Python then never raises
    KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


WAIT_S = 10.0


def server_vars(server: ServerProcess) -> dict[str, str]:
    """VOICESTACK_URL and VOICESTACK_TOKEN (the first admin token): the CLI calls `server`."""
    assert server.token, "the server has not started"
    return {"VOICESTACK_URL": server.url, "VOICESTACK_TOKEN": server.token}


def cli_env(server: ServerProcess | None = None, **extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: no VOICESTACK_* of the developer's; with `server`,
    the URL and admin token that make the CLI call it."""
    env = server_env()
    env.pop("VOICESTACK_LOAD_APPS", None)
    if server is not None:
        env.update(server_vars(server))
    env.update(extra)
    return env


def invoke(args: Sequence[str], env: Mapping[str, str | None] | None = None) -> Result:
    """Run `voicestack ARGS` in-process; stdout and stderr stay apart on the Result."""
    clean: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith("VOICESTACK_")
    }
    clean.update(env or {})
    return CliRunner().invoke(app, list(args), env=clean, catch_exceptions=False)


class CliProcess:
    """`python -m voicestack ARGS` running in the background; its output read as it arrives."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str]) -> None:
        self.args = list(args)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voicestack", *self.args],
            cwd=REPO,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=ctrl_c_as_in_a_terminal,
        )
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self._stdout)),
            threading.Thread(target=self._read, args=(self.process.stderr, self._stderr)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    def _read(self, pipe: Any, into: bytearray) -> None:
        while chunk := os.read(pipe.fileno(), 65536):
            with self._changed:
                into.extend(chunk)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def stdout(self) -> str:
        """Everything written to stdout so far."""
        with self._changed:
            return self._stdout.decode()

    @property
    def stderr(self) -> str:
        """Everything written to stderr so far."""
        with self._changed:
            return self._stderr.decode()

    def wait_for(self, done: Callable[[str], bool], timeout: float = WAIT_S) -> str:
        """Wait until `done(stdout so far)`; returns that stdout (fails after `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                text = self._stdout.decode(errors="replace")
                if done(text):
                    return text
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._alive()):
                    raise AssertionError(
                        f"`voicestack {' '.join(self.args)}` did not print what was expected"
                        f" (exit {self.process.poll()}):\nstdout: {text!r}\n"
                        f"stderr: {self._stderr.decode(errors='replace')!r}"
                    )
                self._changed.wait(min(left, 0.2))

    def _alive(self) -> bool:
        return any(reader.is_alive() for reader in self._readers)

    def interrupt(self, timeout: float = WAIT_S) -> int:
        """Press Ctrl-C (SIGINT); returns the exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def wait(self, timeout: float = WAIT_S) -> int:
        """Wait for the process to exit (and its output to be read); returns its exit code."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"`voicestack {' '.join(self.args)}` did not exit") from None
        for reader in self._readers:
            reader.join(timeout)
        return code

    def kill(self) -> None:
        """Kill the process if it still runs (cleanup after a failed test)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> CliProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def feed_rows(db_path: Path, thread_id: str, after: int) -> list[tuple[str, int, str]]:
    """The thread's feed events after id `after`, straight from the database: (kind, id, data)."""
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [
            (kind, event_id, data)
            for event_id, kind, data in conn.execute(
                "SELECT id, kind, data FROM thread_events WHERE thread_id = ? AND id > ?"
                " ORDER BY id",
                (thread_id, after),
            )
        ]
    finally:
        conn.close()


class TerminalCliProcess:
    """`python -m voicestack ARGS` on a pseudo-terminal, as a person at a terminal runs it."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], columns: int = 100) -> None:
        self.args = list(args)
        self.fd, child_end = pty.openpty()
        fcntl.ioctl(child_end, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voicestack", *self.args],
            cwd=REPO,
            # The size in the environment too: rich reads COLUMNS/LINES first, and a parent
            # (a parallel test runner) may have set them to its own.
            env={**env, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": "30"},
            stdin=child_end,
            stdout=child_end,
            stderr=child_end,
            preexec_fn=ctrl_c_as_in_a_terminal,
        )
        os.close(child_end)
        self.output = bytearray()

    def _read(self, wait: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], wait)
        if ready:
            with contextlib.suppress(OSError):  # EIO once the child is gone
                self.output.extend(os.read(self.fd, 65536))

    def read_until(self, done: Callable[[str], bool], timeout: float = WAIT_S) -> str:
        """Read the terminal until `done(everything so far)`; returns it (fails on timeout)."""
        deadline = time.monotonic() + timeout
        while not done(text := self.output.decode(errors="replace")):
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise AssertionError(f"the terminal never showed what was expected:\n{text!r}")
            self._read(min(left, 0.2))
        return text

    def wait(self, timeout: float = WAIT_S) -> int:
        """Wait for the CLI to exit by itself; returns the exit code (output read to the end)."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("the CLI did not exit")
            self._read(0.1)
        self._read(0.1)
        return self.process.returncode

    def interrupt(self, timeout: float = WAIT_S) -> int:
        """Press Ctrl-C; returns the exit code (the terminal's last output is read too)."""
        self.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("the CLI did not exit after Ctrl-C")
            self._read(0.1)
        self._read(0.1)
        return self.process.returncode

    def __enter__(self) -> TerminalCliProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.fd)
