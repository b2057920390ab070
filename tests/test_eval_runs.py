"""`voicestack eval` against a real server of the support example, its replies, transcripts,
speech and judge verdicts scripted on the fake OpenAI: every expectation kind passing and
failing, spoken turns, --repeat, and the JSON and JUnit reports.

One server and one fake provider serve the whole module; each test uses its own markers.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.evals.judge import INSTRUCTIONS, judge_prompt
from tests.support.agent import marker
from tests.support.cli import CliProcess, cli_env
from tests.support.evals import (
    JUDGE_MODEL,
    eval_server,
    expectations,
    json_report,
    junit_cases,
    run_eval,
    scenario_file,
)
from tests.support.server import ServerProcess
from tests.support.voice import ESPEAK, requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI
from voicestack.testing.fake_openai.audio import speech_pcm, wav_bytes


@pytest.fixture(scope="module")
def desk(provider: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The module's server: the support example, replies from `provider`."""
    with eval_server(tmp_path_factory.mktemp("eval"), provider.api_base) as server:
        yield server


@pytest.fixture
def fake(provider: FakeOpenAI) -> FakeOpenAI:
    """The module's fake provider with no plans or requests of earlier tests."""
    provider.reset()
    return provider


def thread(server: ServerProcess, thread_id: str) -> dict[str, Any]:
    with server.sync_client() as http:
        response = http.get(f"/api/threads/{thread_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def table(stdout: str) -> list[list[str]]:
    """The plain table's rows, with the latency column's number replaced by N."""
    return [
        [re.sub(r"^\d+ ms$", "N ms", cell) for cell in line.split("\t")[:4]]
        for line in stdout.splitlines()
    ]


@requires_espeak
def test_a_scenario_that_meets_every_kind_of_expectation_passes(
    desk: ServerProcess, fake: FakeOpenAI, tmp_path: Path
) -> None:
    typed, spoken, judged = marker(), marker(), marker()
    heard = f"make it three people {spoken}"
    recording = tmp_path / "said.wav"
    subprocess.run([ESPEAK or "", "-w", str(recording), "--", "make it three"], check=True)
    fake.script(
        {
            "match": typed,
            "tool_calls": [{"name": "slow_count", "arguments": {"n": 2, "delay_s": 0}}],
        },
        {"match": typed, "text": "Booked a table for Ana at 7pm."},
        {"match": judged, "text": '{"pass": true, "reason": "It names the time."}'},
        {"transcript": heard, "expect_sha256": hashlib.sha256(recording.read_bytes()).hexdigest()},
        {"match": spoken, "text": "Three people it is."},
    )
    path = scenario_file(
        tmp_path,
        "desk.yaml",
        f"""
name: books a table
agent: support
turns:
  - user: "A table for two at 7pm, name Ana {typed}"
    expect:
      tool_calls: [{{name: slow_count, args: {{n: 2}}}}]
      reply_contains: ["ana", "7PM"]
      reply_not_contains: sorry
      reply_matches: "7 ?pm"
      status: complete
      max_first_token_ms: 60000
      judge: "The reply confirms the time {judged}"
  - say: "make it three"
    expect:
      no_tool_calls: true
      reply_contains: three people
""",
    )
    result = run_eval(
        desk,
        path,
        "--json",
        tmp_path / "r.json",
        "--junit",
        tmp_path / "r.xml",
        provider=fake.api_base,
    )

    assert (result.exit_code, result.stderr) == (
        0,
        "spoken turns: espeak-ng\nbooks a table (run 1): pass\n1 of 1 scenarios passed\n",
    )
    report = json_report(tmp_path / "r.json")
    run = report["scenarios"][0]["results"][0]
    assert expectations(report) == [
        [
            ["status", True, "complete"],
            ["tool_calls", True, 'slow_count({"n":2,"delay_s":0})'],
            ["reply_contains", True, '"Booked a table for Ana at 7pm."'],
            ["reply_contains", True, '"Booked a table for Ana at 7pm."'],
            ["reply_not_contains", True, '"Booked a table for Ana at 7pm."'],
            ["reply_matches", True, '"Booked a table for Ana at 7pm."'],
            ["max_first_token_ms", True, f"{run['turns'][0]['firstTokenMs']:.0f} ms"],
            ["judge", True, "pass: It names the time.", "It names the time."],
        ],
        [
            ["no_tool_calls", True, "no tool call"],
            ["reply_contains", True, '"Three people it is."'],
        ],
    ]
    assert [(t["kind"], t["transcript"], t["reply"]) for t in run["turns"]] == [
        ("user", None, "Booked a table for Ana at 7pm."),
        ("say", heard, "Three people it is."),
    ]
    saved = thread(desk, run["threadId"])
    assert (saved["title"], saved["agent"]) == ("eval: books a table", "support")
    usage = saved["usage"]
    assert run["tokens"] == usage["promptTokens"] + usage["completionTokens"] > 0
    assert table(result.stdout) == [["books a table", "pass", "", "N ms"]]
    assert result.stdout.endswith(f"\t{run['tokens']}\n")
    # The judge saw the criterion and the conversation up to its turn.
    [judged_request] = [
        r["body"] for r in fake.requests("chat") if r["body"]["model"] == JUDGE_MODEL
    ]
    assert judged_request["messages"] == [
        {"role": "system", "content": INSTRUCTIONS},
        {
            "role": "user",
            "content": judge_prompt(
                f"The reply confirms the time {judged}",
                [
                    ("user", f"A table for two at 7pm, name Ana {typed}"),
                    ("assistant", "Booked a table for Ana at 7pm."),
                ],
            ),
        },
    ]
    suite, cases = junit_cases(tmp_path / "r.xml")
    assert (suite["tests"], suite["failures"], suite["errors"]) == ("1", "0", "0")
    assert cases == [("books a table", None, None)]


def test_failed_expectations_are_reported_with_what_the_reply_did(
    desk: ServerProcess, fake: FakeOpenAI, tmp_path: Path
) -> None:
    first, second, third, quiet, judged, unjudged = (marker() for _ in range(6))
    count = {"name": "slow_count", "arguments": {"n": 2, "delay_s": 0}}
    fake.script(
        {"match": first, "tool_calls": [count]},
        {"match": first, "text": "Sorry, we are full."},
        {"match": judged, "text": 'The verdict: {"pass": false, "reason": "Nothing was booked."}'},
        {"match": second, "tool_calls": [count]},
        {"match": second, "text": "Counted."},
        {"match": third, "error": {"status": 400, "message": "no such model"}},
        {"match": quiet, "error": {"status": 400, "message": "no such model"}},
        {"transcript": ""},  # nothing heard: the server refuses the recording
    )
    path = scenario_file(
        tmp_path,
        "failing.yaml",
        f"""
name: misses everything
turns:
  - user: "A table for Ana {first}"
    expect:
      tool_calls: [{{name: slow_count, args: {{n: 5}}}}]
      reply_contains: Ana
      reply_not_contains: [sorry]
      reply_matches: "7 ?pm"
      max_first_token_ms: 1
      judge: "The reply books a table {judged}"
  - user: "Count nothing {second}"
    expect:
      no_tool_calls: true
      judge: "It counts {unjudged}"
  - user: "And now? {third}"
    expect:
      status: complete
---
name: fails without saying
turns:
  - user: "Hello {quiet}"
---
name: is not heard
turns:
  - say: "hello"
  - user: "never sent"
""",
    )
    result = run_eval(
        desk,
        path,
        "--json",
        tmp_path / "r.json",
        "--junit",
        tmp_path / "r.xml",
        provider=fake.api_base,
    )

    assert result.exit_code == 1, result.output
    report = json_report(tmp_path / "r.json")
    [latency] = [t["firstTokenMs"] for t in report["scenarios"][0]["results"][0]["turns"][:1]]
    calls = 'slow_count({"n":2,"delay_s":0})'
    failed = expectations(report)
    refused = (
        "failed (provider_bad_request: The model provider rejected the request"
        " (HTTP 400: no such model).)"
    )
    unanswered = failed[1][1][2]  # no plan: the fake echoes the judge's question
    assert unanswered.startswith(f'no verdict in "You said: Criterion: It counts {unjudged}'), (
        unanswered
    )
    assert failed == [
        [
            ["tool_calls", False, f'{calls} (no match for slow_count({{"n":5}}))'],
            ["reply_contains", False, '"Sorry, we are full."'],
            ["reply_not_contains", False, '"Sorry, we are full."'],
            ["reply_matches", False, '"Sorry, we are full."'],
            ["max_first_token_ms", False, f"{latency:.0f} ms"],
            ["judge", False, "fail: Nothing was booked.", "Nothing was booked."],
        ],
        [["no_tool_calls", False, calls], ["judge", False, unanswered]],
        [["status", False, refused]],
    ]
    assert expectations(report, scenario=1) == [[["status", False, refused]]]
    assert [(s["name"], s["passed"], s["firstFailure"]) for s in report["scenarios"]] == [
        (
            "misses everything",
            False,
            f'turn 1: tool_calls [{{"name":"slow_count","args":{{"n":5}}}}]: saw {calls}'
            ' (no match for slow_count({"n":5}))',
        ),
        ("fails without saying", False, f'turn 1: status "complete": saw {refused}'),
        (
            "is not heard",
            False,
            "turn 1: No speech was heard in the recording; nothing was saved. (no_speech)",
        ),
    ]
    assert report["scenarios"][2]["results"][0]["turns"] == []
    assert (report["passed"], report["summary"]) == (
        False,
        {"scenarios": 3, "passed": 0, "failed": 3},
    )
    assert [row[:3] for row in table(result.stdout)] == [
        ["misses everything", "fail", report["scenarios"][0]["firstFailure"]],
        ["fails without saying", "fail", report["scenarios"][1]["firstFailure"]],
        ["is not heard", "fail", report["scenarios"][2]["firstFailure"]],
    ]
    suite, cases = junit_cases(tmp_path / "r.xml")
    assert (suite["tests"], suite["failures"], suite["errors"]) == ("3", "2", "1")
    assert cases == [
        ("misses everything", report["scenarios"][0]["firstFailure"], None),
        ("fails without saying", report["scenarios"][1]["firstFailure"], None),
        ("is not heard", None, report["scenarios"][2]["firstFailure"]),
    ]


def test_repeat_reports_a_pass_rate_per_scenario(
    desk: ServerProcess, fake: FakeOpenAI, tmp_path: Path
) -> None:
    mark = marker()
    fake.script(
        {"match": mark, "text": "Yes, we are open.", "times": 2},
        {"match": mark, "text": "No idea."},
    )
    path = scenario_file(
        tmp_path,
        "flaky.yaml",
        f"""
name: says it is open
turns:
  - user: "Are you open today? {mark}"
    expect:
      reply_contains: open
""",
    )
    result = run_eval(
        desk,
        path,
        "--repeat",
        "3",
        "--concurrency",
        "3",
        "--json",
        tmp_path / "r.json",
        "--junit",
        tmp_path / "r.xml",
    )

    assert result.exit_code == 1, result.output
    report = json_report(tmp_path / "r.json")
    [scenario] = report["scenarios"]
    assert (scenario["runs"], scenario["passedRuns"], scenario["passRate"]) == (3, 2, 2 / 3)
    runs = scenario["results"]
    assert [run["run"] for run in runs] == [1, 2, 3]
    assert sorted(run["passed"] for run in runs) == [False, True, True]
    assert len({run["threadId"] for run in runs}) == 3
    assert scenario["firstFailure"] == 'turn 1: reply_contains "open": saw "No idea."'
    assert [row[:3] for row in table(result.stdout)] == [
        ["says it is open", "2/3", scenario["firstFailure"]]
    ]
    suite, cases = junit_cases(tmp_path / "r.xml")
    assert (suite["tests"], suite["failures"]) == ("3", "1")
    assert cases == [
        (f"says it is open [run {run['run']}]", None, None)
        if run["passed"]
        else (f"says it is open [run {run['run']}]", scenario["firstFailure"], None)
        for run in runs
    ]


def test_without_espeak_ng_a_spoken_turn_is_synthesized_by_the_provider(
    desk: ServerProcess, fake: FakeOpenAI, tmp_path: Path
) -> None:
    mark = marker()
    said = "Is the kitchen still open?"
    speech = wav_bytes(speech_pcm(said))
    fake.script(
        {
            "transcript": f"is the kitchen open {mark}",
            "expect_sha256": hashlib.sha256(speech).hexdigest(),
        },
        {"match": mark, "text": "It is."},
    )
    path = scenario_file(tmp_path, "spoken.yaml", f"name: asks aloud\nturns:\n  - say: {said}\n")
    no_programs = tmp_path / "bin"
    no_programs.mkdir()
    result = run_eval(
        desk,
        path,
        "--speech-model",
        "tts-9",
        provider=fake.api_base,
        env={"PATH": str(no_programs)},
    )

    assert (result.exit_code, result.stderr.splitlines()[0]) == (
        0,
        "spoken turns: the speech model tts-9",
    ), result.output
    [request] = fake.requests("speech")
    assert request["body"] == {
        "model": "tts-9",
        "voice": "alloy",
        "input": said,
        "response_format": "wav",
    }


def test_agents_the_server_does_not_have_are_bad_input(desk: ServerProcess, tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path,
        "agents.yaml",
        "name: one\nagent: sales\nturns: [{user: hi}]\n---\nname: two\nturns: [{user: hi}]\n",
    )
    result = run_eval(desk, path, "--agent", "marketing")

    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "error: --agent: the server has no agent 'marketing'\n"
        f"error: {path}:1: the server has no agent 'sales'\n"
        "error: Agents on the server: assistant, billing, support.\n"
    )


@requires_espeak
def test_voice_realtime_says_a_turn_on_the_audio_socket(
    desk: ServerProcess, fake: FakeOpenAI, tmp_path: Path
) -> None:
    mark = marker()
    fake.script(
        {"transcript": f"make it three {mark}"},
        {"match": mark, "text": "Three it is."},
    )
    path = scenario_file(
        tmp_path,
        "live.yaml",
        "name: says it live\nturns:\n  - say: make it three people please\n"
        "    expect: {reply_contains: three, max_first_token_ms: 60000}\n",
    )
    result = run_eval(desk, path, "--voice", "realtime", "--json", tmp_path / "r.json")

    assert result.exit_code == 0, result.output
    [turn] = json_report(tmp_path / "r.json")["scenarios"][0]["results"][0]["turns"]
    assert (turn["kind"], turn["transcript"], turn["status"], turn["reply"]) == (
        "say",
        f"make it three {mark}",
        "complete",
        "Three it is.",
    )
    # Heard by the server's turn-taking: the reply carries a live turn's metrics.
    assert turn["voice"]["interrupted"] is False
    assert turn["voice"]["audioInSeconds"] > 1
    [heard] = fake.requests("transcription")
    assert heard["body"]["file"]["content_type"] == "audio/wav"


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
