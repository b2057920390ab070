"""How `voicestack eval` decides and reports without a server: tool calls matched as a whole,
unquoted dates kept as text, and reports that stay valid whatever a reply or error held."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from cli.evals.expectations import check_turn, match_calls
from cli.evals.report import by_scenario, json_bytes, json_report, junit_xml
from cli.evals.results import RunResult, TurnOutcome
from cli.evals.scenario import Expect, Scenario, ToolCallSpec, load_scenarios
from tests.support.evals import scenario_file


def test_tool_calls_are_matched_as_a_whole_not_first_come_first_served() -> None:
    calls = [{"name": "x", "args": {"n": 1}}, {"name": "x", "args": {"n": 2}}]
    loose, exact = ToolCallSpec("x"), ToolCallSpec("x", {"n": 1})
    # The loose one would take x(n=1) first, leaving nothing for the exact one.
    assert match_calls([loose, exact], calls) == [1, 0]
    assert match_calls([exact, ToolCallSpec("x", {"n": 1})], calls) == [0, None]
    outcome = TurnOutcome(1, "user", "hi", status="complete", tool_calls=calls)
    [check] = check_turn(Expect(tool_calls=(loose, exact)), outcome)
    assert (check.kind, check.passed) == ("tool_calls", True)
    [check] = check_turn(Expect(tool_calls=(loose, exact, loose)), outcome)
    assert (check.passed, check.actual) == (
        False,
        'x({"n":1}), x({"n":2}) (no match for x({}))',
    )
    # Lists inside args match item for item.
    listed = [{"name": "x", "args": {"ids": [1, 2]}}]
    assert match_calls([ToolCallSpec("x", {"ids": [1]})], listed) == [None]
    assert match_calls([ToolCallSpec("x", {"ids": [1, 2]})], listed) == [0]


def test_unquoted_dates_stay_text_and_reports_are_valid_whatever_they_hold(
    tmp_path: Path,
) -> None:
    path = scenario_file(
        tmp_path,
        "dated.yaml",
        'name: "books \\a on a date"\nturns:\n  - user: hi\n    expect:\n'
        "      tool_calls: [{name: book, args: {day: 2026-12-04, at: 2026-12-04 19:00:00}}]\n",
    )
    [scenario], problems = load_scenarios([path])
    assert problems == []
    [spec] = scenario.turns[0].expect.tool_calls
    assert spec.args == {"day": "2026-12-04", "at": "2026-12-04 19:00:00"}

    call = {"name": "book", "args": {"day": "2026-12-04", "at": "2026-12-04 19:00:00"}}
    outcome = TurnOutcome(
        1, "user", "hi", status="complete", reply="ok \x00\x1b", tool_calls=[call]
    )
    outcome.checks = check_turn(scenario.turns[0].expect, outcome)
    broken = Scenario("bell \x07 \ufffe", None, scenario.turns, "f\x01.yaml", 1)
    runs = [
        RunResult(scenario, 1, "t1", [outcome]),
        RunResult(broken, 1, None, [], error="the server said \x1b[31mno\x00"),
    ]
    assert runs[0].passed
    results = by_scenario(runs)

    report = json.loads(json_bytes(json_report(results, 1)))
    assert report["scenarios"][0]["results"][0]["turns"][0]["reply"] == "ok \x00\x1b"
    # A value JSON has no type for (an explicit `!!timestamp`) is written as text.
    assert json.loads(json_bytes({"at": Path("x")})) == {"at": "x"}

    # The report is the command's own output, not untrusted input.
    root = ET.fromstring(junit_xml(results, 1))  # noqa: S314
    cases = [(c.attrib["name"], c.attrib["file"]) for c in root.iter("testcase")]
    assert cases == [("books  on a date", str(path)), ("bell  ", "f.yaml")]
    [error] = root.iter("error")
    assert error.attrib["message"] == error.text == "the server said [31mno"
