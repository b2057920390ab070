"""The CLI's argument handling and its failures: one line on stderr, a non-zero exit, no traceback.

Run in-process with Typer's CliRunner; the servers are a real one (unknown threads, missing and
unknown tokens) and a small stand-in that refuses every token and remembers which it was sent.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cli.errors import CliError
from tests.support.cli import invoke, server_vars
from tests.support.server import ServerProcess, free_port

pytestmark = pytest.mark.shared_server

UNKNOWN = "thr_00000000000000000000"
COMMANDS = [
    ["serve"],
    ["thread", "new"],
    ["thread", "list"],
    ["thread", "show"],
    ["thread", "export"],
    ["thread", "send"],
    ["thread", "tail"],
    ["tools", "list"],
    ["functions", "list"],
    ["db", "check"],
    ["db", "backup"],
    ["db", "migrate"],
    ["token", "create"],
    ["token", "list"],
    ["token", "revoke"],
]
# Every command that talks to a server, with the arguments it needs.
SERVER_COMMANDS = [
    ["thread", "new"],
    ["thread", "list"],
    ["thread", "show", UNKNOWN],
    ["thread", "export", UNKNOWN],
    ["thread", "send", UNKNOWN, "hello"],
    ["thread", "send", UNKNOWN, "hello", "--no-wait"],
    ["thread", "tail", UNKNOWN],
    ["thread", "tail", UNKNOWN, "--json"],
    ["tools", "list"],
    ["functions", "list"],
]


def one_error_line(result: object) -> str:
    """The single stderr line of a failed command (asserting there is exactly one)."""
    stderr = result.stderr  # type: ignore[attr-defined]
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    result = invoke([*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert re.search(r"Example: .*\bvoicestack ", result.stdout), result.stdout


@pytest.mark.parametrize("command", SERVER_COMMANDS, ids=" ".join)
def test_an_unreachable_server_is_one_line_and_exit_1(command: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke([*command, "--server", url])
    assert (result.exit_code, result.stdout) == (1, ""), result.output
    assert one_error_line(result) == (
        f"error: Cannot reach the voicestack server at {url} ([Errno 111] Connection refused)."
        " Start it with `voicestack serve`, or pass --server / set VOICESTACK_URL."
    )


def test_the_server_comes_from_voicestack_url_when_not_given() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke(["thread", "list"], env={"VOICESTACK_URL": url})
    assert result.exit_code == 1
    assert f"server at {url} " in one_error_line(result)


def test_a_server_url_that_is_not_http_is_a_usage_error() -> None:
    result = invoke(["thread", "list", "--server", "localhost:8000"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert one_error_line(result) == (
        "error: --server must be an http:// or https:// URL such as http://127.0.0.1:8000,"
        " not 'localhost:8000'."
    )


@pytest.mark.parametrize(
    "command",
    [
        ["thread", "show", UNKNOWN],
        ["thread", "export", UNKNOWN],
        ["thread", "export", UNKNOWN, "--format", "json"],
        ["thread", "send", UNKNOWN, "hello"],
        ["thread", "send", UNKNOWN, "hello", "--no-wait"],
        ["thread", "tail", UNKNOWN],
        ["thread", "tail", UNKNOWN, "--json", "--since", "3"],
    ],
    ids=" ".join,
)
def test_an_unknown_thread_is_one_line_and_exit_1(
    server: ServerProcess, command: list[str]
) -> None:
    result = invoke(command, env=server_vars(server))
    assert (result.exit_code, result.stdout) == (1, ""), result.output
    assert one_error_line(result) == f"error: No thread has id '{UNKNOWN}'. (thread_not_found)"


def test_an_unknown_export_format_is_a_usage_error(server: ServerProcess) -> None:
    result = invoke(["thread", "export", UNKNOWN, "--format", "pdf"], env=server_vars(server))
    assert (result.exit_code, result.stdout) == (2, "")
    assert one_error_line(result) == "error: --format must be md or json, not 'pdf'."


def test_an_empty_message_is_a_usage_error(server: ServerProcess) -> None:
    result = invoke(["thread", "send", UNKNOWN, "  "], env=server_vars(server))
    assert (result.exit_code, result.stdout) == (2, "")
    assert one_error_line(result) == "error: The message is empty."


def test_workers_that_are_neither_a_number_nor_auto_are_a_usage_error() -> None:
    result = invoke(["serve", "--workers", "many"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith("error: ")
    assert "'many' is neither a number of processes nor `auto`" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_argument_is_click_s_usage_error() -> None:
    result = invoke(["thread", "show"])
    assert result.exit_code == 2
    assert "Missing argument" in result.stderr


class RefusingServer(ThreadingHTTPServer):
    """Answers every request 401 in voicestack's error shape; remembers the Authorization sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Refuse)
        self.authorizations: list[str | None] = []

    @property
    def url(self) -> str:
        """The stand-in's base URL."""
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Refuse(BaseHTTPRequestHandler):
    server: RefusingServer

    def _refuse(self) -> None:
        self.server.authorizations.append(self.headers.get("Authorization"))
        body = json.dumps(
            {"error": {"code": "unauthorized", "message": "The token is not valid."}}
        ).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _refuse

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def refusing_server() -> Iterator[RefusingServer]:
    http = RefusingServer()
    thread = threading.Thread(target=http.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield http
    finally:
        http.shutdown()
        http.server_close()
        thread.join()


@pytest.fixture
def refusing(refusing_server: RefusingServer) -> RefusingServer:
    refusing_server.authorizations.clear()
    return refusing_server


@pytest.mark.parametrize("command", SERVER_COMMANDS, ids=" ".join)
def test_a_refused_token_is_one_line_and_exit_1(
    refusing: RefusingServer, command: list[str]
) -> None:
    result = invoke([*command, "--server", refusing.url], env={"VOICESTACK_TOKEN": "s3cret"})
    assert (result.exit_code, result.stdout) == (1, ""), result.output
    assert one_error_line(result) == (
        "error: The server refused the request (HTTP 401, unauthorized): The token is not valid."
        " Pass a valid --token or set VOICESTACK_TOKEN."
    )
    assert set(refusing.authorizations) == {"Bearer s3cret"}


@pytest.mark.parametrize("command", SERVER_COMMANDS, ids=" ".join)
def test_a_command_without_a_token_is_refused_by_the_real_server(
    server: ServerProcess, command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./voicestack.db.token for the CLI to fall back on
    result = invoke([*command, "--server", server.url])
    assert (result.exit_code, result.stdout) == (1, ""), result.output
    assert one_error_line(result) == (
        "error: The server refused the request (HTTP 401, unauthorized): This route needs a"
        " token: send `Authorization: Bearer TOKEN`. Pass a valid --token or set VOICESTACK_TOKEN."
    )


def test_an_unknown_token_is_refused_by_the_real_server(server: ServerProcess) -> None:
    result = invoke(["thread", "list"], env={**server_vars(server), "VOICESTACK_TOKEN": "nonsense"})
    assert (result.exit_code, result.stdout) == (1, ""), result.output
    assert one_error_line(result) == (
        "error: The server refused the request (HTTP 401, invalid_token): The token is not"
        " valid: it is unknown or has been revoked. Pass a valid --token or set VOICESTACK_TOKEN."
    )


def test_the_token_option_wins_over_the_environment(refusing: RefusingServer) -> None:
    result = invoke(
        ["thread", "list", "--server", refusing.url, "--token", "flag"],
        env={"VOICESTACK_TOKEN": "env"},
    )
    assert result.exit_code == 1
    assert refusing.authorizations == ["Bearer flag"]


def test_voicestack_raise_errors_gives_the_traceback_instead() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CliError, match="Cannot reach the voicestack server"):
        invoke(["thread", "list", "--server", url], env={"VOICESTACK_RAISE_ERRORS": "1"})
