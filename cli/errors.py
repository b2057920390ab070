"""Errors at the command line: one readable line on stderr and a non-zero exit, never a traceback.

Set `VOICESTACK_RAISE_ERRORS=1` to get the traceback instead (for tests and bug reports).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

P = ParamSpec("P")
T = TypeVar("T")

RAISE_ERRORS_ENV = "VOICESTACK_RAISE_ERRORS"

# Exit codes: 1 for a failure the command reports, 2 for a command line that makes no sense
# (the code click uses for usage errors).
FAILURE = 1
USAGE = 2
INTERRUPTED = 130


class CliError(Exception):
    """A failure the user can act on: `message` is the whole line they see."""

    def __init__(self, message: str, exit_code: int = FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def print_error(message: str) -> None:
    """Write `error: message` as one line on stderr."""
    line = " ".join(message.split())  # one line, whatever the server's message contained
    sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()


def reports_errors(command: Callable[P, T]) -> Callable[P, T]:
    """Turn CliError into one stderr line and its exit code.

    Ctrl-C ends the command quietly with 130 (commands that follow a feed catch it themselves
    and exit 0); a reader that went away (`| head`) ends it quietly too.
    """

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return command(*args, **kwargs)
        except CliError as exc:
            if os.environ.get(RAISE_ERRORS_ENV):
                raise
            print_error(exc.message)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if os.environ.get(RAISE_ERRORS_ENV):
                raise
            raise typer.Exit(INTERRUPTED) from None
        except BrokenPipeError:
            # Python would complain again when it flushes stdout at exit: point it at nothing.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(FAILURE) from None

    return run
