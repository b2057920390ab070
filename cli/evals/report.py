"""Showing eval results: a progress bar while they run, a table after, a JSON report with every
expectation's result, and JUnit XML for CI systems."""

from __future__ import annotations

import json
import os
import re
import statistics
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.errors import CliError
from cli.evals.results import RunResult
from cli.evals.scenario import Scenario
from cli.output import Output, one_line

# What XML 1.0 does not allow anywhere, even escaped: most control characters, lone surrogates,
# U+FFFE and U+FFFF. Replies and server errors may hold them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class ScenarioResult:
    """A scenario's runs, in order."""

    scenario: Scenario
    runs: list[RunResult]

    @property
    def passed_runs(self) -> int:
        """How many runs passed."""
        return sum(run.passed for run in self.runs)

    @property
    def passed(self) -> bool:
        """True when every run passed."""
        return self.passed_runs == len(self.runs)

    def first_failure(self) -> str:
        """The first failure of the first failing run ('' when all passed)."""
        return next((f for run in self.runs if (f := run.first_failure())), "")

    def first_token_ms(self) -> list[float]:
        """Every reply's first-token latency, over all runs."""
        return [ms for run in self.runs for ms in run.first_token_ms()]

    def tokens(self) -> int:
        """Tokens per run, on average."""
        return round(sum(run.tokens for run in self.runs) / len(self.runs))


def by_scenario(results: Sequence[RunResult]) -> list[ScenarioResult]:
    """The runs grouped by scenario, in the order the scenarios were given."""
    grouped: dict[str, list[RunResult]] = {}
    for run in results:
        grouped.setdefault(run.scenario.name, []).append(run)
    return [ScenarioResult(runs[0].scenario, runs) for runs in grouped.values()]


class RunProgress:
    """A progress bar on stderr when it is a terminal; else one line per run that ended."""

    def __init__(self, out: Output, total: int) -> None:
        self.out = out
        self.bar: Progress | None = None
        if out.err.is_terminal:
            self.bar = Progress(
                TextColumn("eval"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                console=out.err,
                transient=True,
            )
            self.task = self.bar.add_task("eval", total=total, failed=0)
        self.failed = 0

    def __enter__(self) -> Self:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.bar is not None:
            self.bar.stop()

    def done(self, run: RunResult) -> None:
        """Count a run that ended."""
        self.failed += not run.passed
        if self.bar is not None:
            self.bar.update(self.task, advance=1, failed=self.failed)
            return
        verdict = "pass" if run.passed else f"FAIL {run.first_failure()}"
        self.out.err.print(f"{run.scenario.name} (run {run.run}): {verdict}", markup=False)


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ms" if values else ""


def show_table(out: Output, results: list[ScenarioResult], repeat: int) -> None:
    """The results table: scenario, pass/fail (the pass rate with --repeat), the first failing
    expectation with what was seen, the median first-token latency, tokens per run."""
    rows = []
    for result in results:
        if repeat > 1:
            verdict = f"{result.passed_runs}/{len(result.runs)}"
        else:
            verdict = "pass" if result.passed else "fail"
        if out.terminal:
            verdict = f"[{'green' if result.passed else 'red'}]{verdict}[/]"
        failure = one_line(result.first_failure(), 160 if out.terminal else None)
        rows.append(
            [
                result.scenario.name,
                verdict,
                failure,
                _ms(result.first_token_ms()),
                str(result.tokens()),
            ]
        )
    columns = ["scenario", "pass rate" if repeat > 1 else "result", "first failure", "first token"]
    out.table([*columns, "tokens"], rows)
    passed = sum(r.passed for r in results)
    out.note(f"{passed} of {len(results)} scenarios passed")


def json_report(results: list[ScenarioResult], repeat: int) -> dict[str, Any]:
    """The machine-readable report: every run, turn and expectation."""
    scenarios = []
    for result in results:
        latencies = result.first_token_ms()
        scenarios.append(
            {
                "name": result.scenario.name,
                "file": result.scenario.file,
                "line": result.scenario.line,
                "agent": result.scenario.agent,
                "passed": result.passed,
                "passedRuns": result.passed_runs,
                "runs": len(result.runs),
                "passRate": result.passed_runs / len(result.runs),
                "firstFailure": result.first_failure() or None,
                "firstTokenMs": {
                    "median": statistics.median(latencies) if latencies else None,
                    "max": max(latencies) if latencies else None,
                },
                "tokensPerRun": result.tokens(),
                "results": [run.as_json() for run in result.runs],
            }
        )
    passed = sum(r.passed for r in results)
    return {
        "passed": passed == len(results),
        "repeat": repeat,
        "summary": {"scenarios": len(results), "passed": passed, "failed": len(results) - passed},
        "scenarios": scenarios,
    }


def junit_xml(results: list[ScenarioResult], repeat: int) -> bytes:
    """JUnit XML: one test case per run (`NAME [run N]` with --repeat), a failure per failing
    run listing its failed expectations, an error for a run the server or network stopped."""
    runs = [run for result in results for run in result.runs]
    failures = sum(1 for run in runs if run.error is None and not run.passed)
    errors = sum(1 for run in runs if run.error is not None)
    seconds = f"{sum(run.seconds for run in runs):.3f}"
    counts = {"tests": str(len(runs)), "failures": str(failures), "errors": str(errors)}
    root = ET.Element("testsuites", {"name": "voicestack eval", **counts, "time": seconds})
    suite = ET.SubElement(root, "testsuite", {"name": "voicestack eval", **counts, "time": seconds})
    for run in runs:
        scenario = run.scenario
        name = f"{scenario.name} [run {run.run}]" if repeat > 1 else scenario.name
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": f"eval.{Path(scenario.file).stem}",
                "name": name,
                "file": scenario.file,
                "line": str(scenario.line),
                "time": f"{run.seconds:.3f}",
            },
        )
        failed = [
            f"turn {turn.index}: {check.summary()}"
            for turn in run.turns
            for check in turn.checks
            if not check.passed
        ]
        if run.error is not None:
            ET.SubElement(case, "error", {"message": run.error, "type": "error"}).text = run.error
        elif failed:
            element = ET.SubElement(case, "failure", {"message": failed[0], "type": "expectation"})
            element.text = "\n".join(failed)
        if run.thread_id is not None:
            ET.SubElement(case, "system-out").text = f"thread {run.thread_id}"
    for element in root.iter():
        element.attrib = {key: _NOT_XML.sub("", value) for key, value in element.attrib.items()}
        if element.text:
            element.text = _NOT_XML.sub("", element.text)
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def unwritable(path: Path) -> str | None:
    """Why a report cannot be written to `path` (checked before the runs), or None."""
    if path.is_dir():
        return "it is a folder"
    if path.exists():
        return None if os.access(path, os.W_OK) else "permission denied"
    folder = path.parent
    if not folder.is_dir():
        return f"no folder {folder}"
    return None if os.access(folder, os.W_OK | os.X_OK) else f"the folder {folder} is read-only"


def write_report(path: Path, content: bytes) -> None:
    """Write a report file; a CliError when it cannot be written."""
    try:
        path.write_bytes(content)
    except OSError as exc:
        raise CliError(f"Cannot write {path}: {exc.strerror or exc}.") from None


def json_bytes(report: dict[str, Any]) -> bytes:
    """The JSON report as written to --json."""
    # default=str: a YAML value the scenario gave that JSON has no type for (a `!!timestamp`).
    return (json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n").encode()
