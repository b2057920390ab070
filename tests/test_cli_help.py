"""`voicestack --help` and the host-side commands load only what they use, so they start fast.

How fast is measured by bench/cli_startup.py; these tests pin down what makes it fast: which
modules a command imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import cli.serve
from cli.main import SERVE_SUMMARY
from tests.support.cli import invoke
from tests.support.server import REPO, server_env

# The server stack, the HTTP client and the settings model: none is needed to print help.
HEAVY = ("voicestack.config", "voicestack.runtime", "voicestack.store", "httpx", "uvicorn")


def modules_loaded_by(args: list[str], cwd: Path) -> list[str]:
    """Run `voicestack ARGS` in a fresh interpreter; which HEAVY modules it imported."""
    script = (
        "import sys\n"
        f"sys.argv = ['voicestack', *{args!r}]\n"
        "from cli.main import app\n"
        "try:\n"
        "    app()\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(__import__('json').dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env={**server_env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_the_root_help_lists_serve_with_its_own_summary() -> None:
    doc = cli.serve.serve.__doc__ or ""
    assert doc.strip().splitlines()[0] == SERVE_SUMMARY
    result = invoke(["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    listed = [line.split()[1:3] for line in result.stdout.splitlines() if "│ serve " in line]
    assert listed == [["serve", "Run"]]


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["token", "--help"],
        ["db", "check", "--help"],
        ["thread", "--help"],
        ["usage", "--help"],
    ],
)
def test_help_loads_neither_the_server_nor_the_http_client(args: list[str], tmp_path: Path) -> None:
    assert modules_loaded_by(args, tmp_path) == []


def test_token_list_loads_the_store_but_not_the_server(tmp_path: Path) -> None:
    assert modules_loaded_by(["token", "list", "--json"], tmp_path) == ["voicestack.store"]
