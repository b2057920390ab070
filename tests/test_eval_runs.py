"""`voicestack eval` against a real server of the support example, its replies, transcripts and
judge verdicts scripted on the fake OpenAI: every expectation kind passing and failing, --repeat,
agents the server does not have, and the JSON and JUnit reports.

One server and one fake provider serve the whole module; each test uses its own markers.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path
from typing import Any

from cli.evals.judge import INSTRUCTIONS, judge_prompt
from tests.support.agent import marker
from tests.support.evals import (
    JUDGE_MODEL,
    eval_fixtures,
    expectations,
    json_report,
    junit_cases,
    run_eval,
    scenario_file,
)
from tests.support.server import ServerProcess
from tests.support.voice import ESPEAK, requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI

desk, fake = eval_fixtures()


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
