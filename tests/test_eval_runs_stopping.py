"""`voicestack eval` stops a run whose reply never ends: at the turn timeout, or on Ctrl-C."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.support.agent import marker
from tests.support.cli import CliProcess, cli_env
from tests.support.evals import (
    eval_fixtures,
    json_report,
    junit_cases,
    run_eval,
    scenario_file,
)
from tests.support.server import ServerProcess
from voicestack.testing.fake_openai import FakeOpenAI

desk, fake = eval_fixtures()


def _approval_scenarios(tmp_path: Path, fake: FakeOpenAI) -> tuple[Path, str]:
    """A file whose first scenario's reply waits for an approval nobody gives (guarded_echo),
    and whose second passes; and the first's marker."""
    held, quick = marker(), marker()
    fake.script(
        {"match": held, "tool_calls": [{"name": "guarded_echo", "arguments": {"text": "hi"}}]},
        {"match": quick, "text": "Hello there."},
    )
    path = scenario_file(
        tmp_path,
        "held.yaml",
        f"""
name: waits for approval
agent: support
turns:
  - user: "Echo hi {held}"
  - user: "never sent"
---
name: greets
turns:
  - user: "Hello {quick}"
    expect: {{reply_contains: hello}}
""",
    )
    return path, held


def _held_thread(server: ServerProcess, mark: str) -> dict[str, Any] | None:
    """The thread where `mark` was said, if there is one yet."""
    with server.sync_client() as http:
        for row in http.get("/api/threads").json():
            if row["title"] != "eval: waits for approval":
                continue
            detail: dict[str, Any] = http.get(f"/api/threads/{row['id']}").json()
            if any(mark in (m.get("text") or "") for m in detail["messages"]):
                return detail
    return None


def _awaiting_approval(server: ServerProcess, mark: str) -> bool:
    """True once the thread where `mark` was said has a tool call awaiting approval."""
    held = _held_thread(server, mark)
    calls = (held or {}).get("toolCalls") or []
    return any(call["status"] == "awaiting_approval" for call in calls)


def _cancel_held(server: ServerProcess, mark: str) -> None:
    """Stop the reply that waits for approval (else the server waits for it when it stops)."""
    held = _held_thread(server, mark)
    assert held is not None
    with server.sync_client() as http:
        http.post(f"/api/threads/{held['id']}/cancel")


def test_a_reply_that_never_ends_fails_its_run_at_the_turn_timeout(
    desk: ServerProcess, fake: FakeOpenAI, tmp_path: Path
) -> None:
    path, held = _approval_scenarios(tmp_path, fake)
    result = run_eval(
        desk,
        path,
        "--turn-timeout",
        "1.5",
        "--concurrency",
        "2",
        "--json",
        tmp_path / "r.json",
        "--junit",
        tmp_path / "r.xml",
    )

    assert result.exit_code == 1, result.output
    report = json_report(tmp_path / "r.json")
    waited = "turn 1: no final reply within 1.5s (the tool call guarded_echo awaits approval)"
    assert [(s["name"], s["passed"], s["firstFailure"]) for s in report["scenarios"]] == [
        ("waits for approval", False, waited),
        ("greets", True, None),
    ]
    assert report["scenarios"][0]["results"][0]["turns"] == []
    _, cases = junit_cases(tmp_path / "r.xml")
    assert cases == [("waits for approval", None, waited), ("greets", None, None)]
    _cancel_held(desk, held)


def test_ctrl_c_stops_every_run_at_once_and_writes_the_reports_of_those_that_ended(
    desk: ServerProcess, fake: FakeOpenAI, tmp_path: Path
) -> None:
    path, held = _approval_scenarios(tmp_path, fake)
    args = ["eval", str(path), "--concurrency", "2", "--json", str(tmp_path / "r.json")]
    with CliProcess(args, cli_env(desk)) as cli:
        deadline = time.monotonic() + 30
        while "greets (run 1): pass" not in cli.stderr or not _awaiting_approval(desk, held):
            assert time.monotonic() < deadline, cli.stderr
            assert cli.process.poll() is None, cli.stderr
            time.sleep(0.1)
        # Without the turn timeout's 120 s or the second turn: at once.
        assert cli.interrupt(timeout=10) == 130, cli.stderr

    assert cli.stderr.endswith("greets (run 1): pass\n1 of 1 scenarios passed\ninterrupted\n")
    report = json_report(tmp_path / "r.json")
    assert [(s["name"], s["passed"]) for s in report["scenarios"]] == [("greets", True)]
    _cancel_held(desk, held)
