"""`voicestack eval`: replay scenario files against a server and check every reply (DESIGN §11).

The work is in cli/evals/; this module declares the command with Typer only and imports the
rest when it runs, so that `voicestack --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.errors import FAILURE, INTERRUPTED, USAGE, CliError, print_error, reports_errors
from cli.options import DEFAULT_URL, ServerOption, TokenOption

if TYPE_CHECKING:
    from cli.client import ApiClient
    from cli.evals.scenario import Scenario

VOICE_PATHS = ("http", "realtime")
DEFAULT_SPEECH_MODEL = "gpt-4o-mini-tts"
DEFAULT_TURN_TIMEOUT_S = 120.0


@reports_errors
def eval_command(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Scenario files (YAML) or folders of *.yaml files.", show_default=False
        ),
    ],
    agent: Annotated[
        str | None,
        typer.Option(help="The agent of scenarios that name none (default: the server's)."),
    ] = None,
    repeat: Annotated[
        int, typer.Option(min=1, help="Run each scenario N times and report its pass rate.")
    ] = 1,
    concurrency: Annotated[int, typer.Option(min=1, help="Runs at a time.")] = 1,
    turn_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            max=86_400,
            help="Seconds a reply may take to end (a tool call awaiting approval never does);"
            " then its run fails.",
        ),
    ] = DEFAULT_TURN_TIMEOUT_S,
    json_file: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Write a JSON report with every expectation's result here.",
            dir_okay=False,
        ),
    ] = None,
    junit_file: Annotated[
        Path | None,
        typer.Option(
            "--junit", help="Write a JUnit XML report here (for CI systems).", dir_okay=False
        ),
    ] = None,
    judge_model: Annotated[
        str | None,
        typer.Option(help="The chat model that decides `judge` expectations.", show_default=False),
    ] = None,
    provider_base_url: Annotated[
        str | None,
        typer.Option(
            envvar="OPENAI_BASE_URL",
            help="The OpenAI-compatible API of the judge, and of speech for `say:` turns when"
            " espeak-ng is not installed (default: OpenAI's).",
            show_envvar=True,
            show_default=False,
        ),
    ] = None,
    provider_api_key: Annotated[
        str | None,
        typer.Option(
            envvar="OPENAI_API_KEY",
            help="That API's key.",
            show_envvar=True,
            show_default=False,
        ),
    ] = None,
    speech_model: Annotated[
        str, typer.Option(help="The speech model for `say:` turns without espeak-ng.")
    ] = DEFAULT_SPEECH_MODEL,
    voice: Annotated[
        str,
        typer.Option(
            metavar="http|realtime",
            help="How `say:` turns are sent: http (POST /voice) or realtime (the thread's"
            " audio socket).",
        ),
    ] = "http",
    server: ServerOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Replay scenario files against an agent and check every reply; exit 1 when any fails.

    Each scenario runs in a fresh thread titled "eval: NAME". A bad scenario file is reported
    with its file and line before anything runs (exit 2). Ctrl-C stops every run, writes the
    reports of those that ended and exits 130.

    Example: voicestack eval examples/evals --repeat 3 --junit eval.xml
    """
    from cli.client import ApiClient
    from cli.evals.judge import Judge, Provider
    from cli.evals.report import (
        RunProgress,
        by_scenario,
        json_bytes,
        json_report,
        junit_xml,
        show_table,
        unwritable,
        write_report,
    )
    from cli.evals.runner import Helpers, Interrupted, Target, run_all
    from cli.evals.scenario import load_scenarios
    from cli.evals.speech import Speaker
    from cli.output import Output

    if voice not in VOICE_PATHS:
        raise CliError(f"--voice takes {', '.join(VOICE_PATHS)}, not {voice!r}.", USAGE)
    for option, report_file in (("--json", json_file), ("--junit", junit_file)):
        why = unwritable(report_file) if report_file is not None else None
        if why is not None:
            raise CliError(f"{option}: cannot write {report_file}: {why}.", USAGE)
    scenarios, problems = load_scenarios(paths)
    if problems:
        for problem in problems:
            print_error(str(problem))
        raise typer.Exit(USAGE)
    if judge_model is None and any(s.uses_judge for s in scenarios):
        raise CliError("Scenarios have `judge` expectations: pass --judge-model.", USAGE)
    with ApiClient(server, token) as api:
        _check_agents(api, scenarios, agent)
    provider = Provider(provider_base_url, provider_api_key)
    speaking = any(turn.kind == "say" for s in scenarios for turn in s.turns)
    helpers = Helpers(
        Speaker(provider, speech_model) if speaking else None,
        Judge(judge_model, provider) if judge_model is not None else None,
    )
    out = Output()
    if helpers.speaker is not None:
        out.note(f"[dim]spoken turns: {helpers.speaker.source}[/]")
    target = Target(server, token, agent, voice, turn_timeout)
    interrupted = False
    try:
        with RunProgress(out, len(scenarios) * repeat) as progress:
            runs = run_all(target, helpers, scenarios, repeat, concurrency, progress.done)
    except Interrupted as stop:
        runs, interrupted = stop.runs, True
    finally:
        for helper in (helpers.speaker, helpers.judge):
            if helper is not None:
                helper.close()
    results = by_scenario(runs)
    show_table(out, results, repeat)
    if json_file is not None:
        write_report(json_file, json_bytes(json_report(results, repeat)))
    if junit_file is not None:
        write_report(junit_file, junit_xml(results, repeat))
    if interrupted:
        out.err.print("interrupted", markup=False)
        raise typer.Exit(INTERRUPTED)
    if not all(result.passed for result in results):
        raise typer.Exit(FAILURE)


def _check_agents(api: ApiClient, scenarios: list[Scenario], default: str | None) -> None:
    """Every agent the scenarios name exists on the server, or a usage error naming each."""
    known = {row["name"] for row in api.get("/api/agents")}
    wrong = [
        f"{s.file}:{s.line}: the server has no agent {s.agent!r}"
        for s in scenarios
        if s.agent is not None and s.agent not in known
    ]
    if default is not None and default not in known:
        wrong.insert(0, f"--agent: the server has no agent {default!r}")
    if wrong:
        for line in wrong:
            print_error(line)
        raise CliError(f"Agents on the server: {', '.join(sorted(known))}.", USAGE)
