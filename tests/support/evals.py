"""`voicestack eval` as tests run it: scenario files written to a temp folder, the command run
in-process against a real server of the README's support desk, and its reports read back."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from tests.support.agent import running_agent_server
from tests.support.cli import invoke, server_vars
from tests.support.server import ServerProcess
from voicestack.testing.fake_openai import FakeOpenAI

# voicestack/examples/support.py: the agents `support` (every tool, hands off to billing) and
# `billing`, beside the test app; the tools are the test tools (slow_count, ...).
SUPPORT_APP = "voicestack.examples.support"
JUDGE_MODEL = "judge-1"


@contextmanager
def eval_server(workdir: Path, api_base: str) -> Iterator[ServerProcess]:
    """A server of the support example whose replies come from `api_base`."""
    with running_agent_server(workdir, api_base, "--app", SUPPORT_APP) as server:
        yield server


def scenario_file(directory: Path, name: str, text: str) -> Path:
    """Write `text` (YAML) to `directory/name` and return its path."""
    path = directory / name
    path.write_text(text)
    return path


def run_eval(
    server: ServerProcess | None,
    *args: str | Path,
    provider: str | None = None,
    env: Mapping[str, str | None] | None = None,
) -> Result:
    """`voicestack eval ARGS` in-process against `server`, with `provider` as the judge's and
    the speech's API (--judge-model judge-1)."""
    extra = ["--judge-model", JUDGE_MODEL, "--provider-base-url", provider] if provider else []
    variables: dict[str, str | None] = {"OPENAI_BASE_URL": None, "OPENAI_API_KEY": None}
    if server is not None:
        variables.update(server_vars(server))
    variables.update(env or {})
    return invoke(["eval", *map(str, args), *extra], env=variables)


def json_report(path: Path) -> dict[str, Any]:
    """The --json report."""
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def expectations(report: dict[str, Any], scenario: int = 0, run: int = 0) -> list[list[Any]]:
    """Each turn's expectations of one run as [kind, passed, actual] (and the judge's reason)."""
    turns = report["scenarios"][scenario]["results"][run]["turns"]
    return [
        [
            [e["kind"], e["passed"], e["actual"], *([e["reason"]] if "reason" in e else [])]
            for e in turn["expectations"]
        ]
        for turn in turns
    ]


def junit_cases(path: Path) -> tuple[dict[str, str], list[tuple[str, str | None, str | None]]]:
    """The JUnit report's suite attributes, and each test case's (name, failure message, error
    message)."""
    # The report is the command's own output, not untrusted input.
    suite = ET.parse(path).getroot().find("testsuite")  # noqa: S314
    assert suite is not None
    cases = []
    for case in suite.iter("testcase"):
        failure, error = case.find("failure"), case.find("error")
        cases.append(
            (
                case.attrib["name"],
                failure.attrib["message"] if failure is not None else None,
                error.attrib["message"] if error is not None else None,
            )
        )
    return dict(suite.attrib), cases


def eval_fixtures() -> tuple[Any, Any]:
    """An eval test module's fixtures, for it to assign at its top level (`desk, fake =
    eval_fixtures()`): `desk`, the module's server of the support example with replies from
    tests/conftest.py's `provider`, and `fake`, that provider with no plans or requests of
    earlier tests."""

    @pytest.fixture(scope="module")
    def desk(
        provider: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[ServerProcess]:
        """The module's server: the support example, replies from `provider`."""
        with eval_server(tmp_path_factory.mktemp("eval"), provider.api_base) as server:
            yield server

    @pytest.fixture
    def fake(provider: FakeOpenAI) -> FakeOpenAI:
        """The module's fake provider with no plans or requests of earlier tests."""
        provider.reset()
        return provider

    return desk, fake
