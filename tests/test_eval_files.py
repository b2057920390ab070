"""`voicestack eval` reads every scenario file and reports every problem, with its file and
line, before it runs anything (exit 2); the shipped examples are valid. No server is needed:
the command never gets as far as calling one."""

from __future__ import annotations

from pathlib import Path

from cli.evals.scenario import load_scenarios
from tests.support.evals import run_eval, scenario_file
from tests.support.server import REPO

NOWHERE = {"VOICESTACK_URL": "http://127.0.0.1:9"}  # never called: the files are refused first

BAD = """\
name: books a table
agnet: support
turns:
  - user: "A table for two"
    say: "and spoken"
  - user: ""
    expect:
      reply_contain: ["Ana"]
      status: done
      max_first_token_ms: -3
      reply_matches: "(7pm"
      tool_calls: [{name: book_table, args: [2]}, {args: {party_size: 2}}]
      no_tool_calls: false
---
- a list is no scenario
---
name: no turns
turns: []
---
name: dup
turns: [{user: hi}]
---
turns: [{say: hello, expect: {judge: "It greets"}}]
"""


def test_every_problem_of_every_file_is_reported_with_its_line_before_anything_runs(
    tmp_path: Path,
) -> None:
    bad = scenario_file(tmp_path, "bad.yaml", BAD)
    broken = scenario_file(tmp_path, "broken.yaml", "name: x\nturns: [\n  - user: hi\n")
    twice = scenario_file(tmp_path, "twice.yml", "name: dup\nturns:\n  - user: again\n")
    scenario_file(tmp_path, "notes.txt", "not a scenario file: folders take *.yaml and *.yml")
    missing = tmp_path / "missing.yaml"

    result = run_eval(None, tmp_path, missing, env=NOWHERE)

    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"error: {bad}:2: unknown key 'agnet' in a scenario; did you mean 'agent'? allowed:"
        " name, agent, turns",
        f"error: {bad}:4: a turn has exactly one of `user:` (typed) or `say:` (spoken)",
        f"error: {bad}:6: user must be a non-empty text, not ''",
        f"error: {bad}:8: unknown key 'reply_contain' in expect; did you mean 'reply_contains'?"
        " allowed: reply_contains, reply_not_contains, reply_matches, tool_calls,"
        " no_tool_calls, status, max_first_token_ms, judge",
        f"error: {bad}:9: status must be one of complete, failed, interrupted",
        f"error: {bad}:10: max_first_token_ms must be a positive finite number, not -3",
        f"error: {bad}:11: reply_matches is not a regex: missing ), unterminated subpattern at"
        " position 0",
        f"error: {bad}:12: a tool call's args must be a mapping, not [2]",
        f"error: {bad}:12: a tool call needs a name",
        f"error: {bad}:13: no_tool_calls must be true, not False",
        f"error: {bad}:13: a turn expects tool_calls or no_tool_calls",
        f"error: {bad}:15: a scenario must be a mapping with keys name, agent, turns",
        f"error: {bad}:18: turns must be a non-empty list of `user:` or `say:` turns",
        f"error: {bad}:23: a scenario needs a name",
        f"error: {broken}:3: not valid YAML: expected the node content, but found '-' (while"
        " parsing a flow node)",
        f"error: {missing}: no such file or folder",
        f"error: {twice}:1: the name 'dup' is used at {bad}:20",
    ]


def test_yaml_tags_and_endless_limits_are_problems_and_unwritable_reports_are_refused(
    tmp_path: Path,
) -> None:
    tagged = scenario_file(
        tmp_path,
        "tagged.yaml",
        "name: tagged\nturns:\n  - user: !foo hello\n---\nname: typed\nturns:\n"
        "  - user: !!int many\n---\nname: endless\nturns:\n  - user: hi\n"
        "    expect: {max_first_token_ms: .inf}\n",
    )
    result = run_eval(None, tagged, env=NOWHERE)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"error: {tagged}:3: not valid YAML: could not determine a constructor for the tag '!foo'",
        f"error: {tagged}:7: not valid YAML: invalid literal for int() with base 10: 'many'",
        f"error: {tagged}:12: max_first_token_ms must be a positive finite number, not inf",
    ]

    good = scenario_file(tmp_path, "good.yaml", "name: good\nturns: [{user: hi}]\n")
    for option, path in [
        ("--json", tmp_path / "nowhere" / "r.json"),
        ("--junit", good / "r.xml"),  # a file is no folder
    ]:
        result = run_eval(None, good, option, path, env=NOWHERE)
        assert (result.exit_code, result.stderr) == (
            2,
            f"error: {option}: cannot write {path}: no folder {path.parent}.\n",
        )


def test_judge_expectations_need_a_judge_model(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path, "judged.yaml", "name: j\nturns: [{user: hi, expect: {judge: It greets}}]\n"
    )
    result = run_eval(None, path, env=NOWHERE)
    assert (result.exit_code, result.stderr) == (
        2,
        "error: Scenarios have `judge` expectations: pass --judge-model.\n",
    )


def test_the_example_scenarios_are_valid() -> None:
    scenarios, problems = load_scenarios([REPO / "examples" / "evals"])
    assert problems == []
    assert {(s.name, s.agent) for s in scenarios} >= {
        ("support hands a refund question to billing", "support"),
        ("billing explains an invoice line", "billing"),
        ("tells the time in Tokyo", None),
    }
