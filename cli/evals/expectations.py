"""Deciding a turn's expectations from what its reply did (all but `judge`, see judge.py).

- `reply_contains` / `reply_not_contains`: each text is looked for in the reply, ignoring case.
- `reply_matches`: a Python regular expression searched in the reply (case counts; `(?i)`).
- `tool_calls`: each expected call is matched by a different call of the reply, in any order,
  with the same name and arguments that include the expected ones (mappings are a subset,
  recursively; lists must match item for item). The matching is a maximum one: an expected
  call that several calls fit never takes the only call another one fits.
- `no_tool_calls`: the reply called no tool (a handoff's `transfer_to_…` counts).
- `status`: the reply's final status. A turn that does not say expects `complete`, so a failed
  reply never passes by accident.
- `max_first_token_ms`: from sending the turn to the reply's first streamed text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from cli.evals.results import Check, TurnOutcome, shown
from cli.evals.scenario import Expect, ToolCallSpec


def is_subset(expected: Any, actual: Any) -> bool:
    """True when `actual` has everything `expected` has: mappings key by key (extra keys
    allowed), anything else equal (1 and 1.0 are equal, True and 1 are not)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and is_subset(value, actual[key]) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(is_subset(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    return bool(expected == actual)


def _calls_seen(calls: list[dict[str, Any]]) -> str:
    if not calls:
        return "no tool call"
    return ", ".join(f"{c.get('name')}({shown(c.get('args'), 60)})" for c in calls)


def _reply_seen(outcome: TurnOutcome) -> str:
    return shown(outcome.reply, 120) if outcome.reply else "an empty reply"


def match_calls(
    expected: Sequence[ToolCallSpec], calls: Sequence[dict[str, Any]]
) -> list[int | None]:
    """For each expected call, the index of the call matched with it (None: none left): as
    many expected calls matched as can be, each with a different call."""
    fits = [
        [
            n
            for n, call in enumerate(calls)
            if call.get("name") == spec.name and is_subset(spec.args, call.get("args"))
        ]
        for spec in expected
    ]
    owner: dict[int, int] = {}  # call index -> expected index

    def place(spec: int, tried: set[int]) -> bool:
        # Take a free call, or one whose owner can move to another (backtracking).
        for call in fits[spec]:
            if call not in tried:
                tried.add(call)
                if call not in owner or place(owner[call], tried):
                    owner[call] = spec
                    return True
        return False

    for spec in range(len(expected)):
        place(spec, set())
    matched = {spec: call for call, spec in owner.items()}
    return [matched.get(spec) for spec in range(len(expected))]


def _tool_calls(expected: tuple[ToolCallSpec, ...], outcome: TurnOutcome) -> Check:
    matches = match_calls(expected, outcome.tool_calls)
    missing = [spec for spec, call in zip(expected, matches, strict=True) if call is None]
    wanted = [{"name": spec.name, "args": spec.args} for spec in expected]
    seen = _calls_seen(outcome.tool_calls)
    if missing:
        seen = f"{seen} (no match for {missing[0].name}({shown(missing[0].args, 60)}))"
    return Check("tool_calls", wanted, not missing, seen)


def _status(expected: str, outcome: TurnOutcome) -> Check:
    seen = outcome.status or "no reply"
    if outcome.error and outcome.status != expected:
        seen = f"{seen} ({outcome.error.get('code')}: {outcome.error.get('message')})"
    return Check("status", expected, outcome.status == expected, seen)


def check_turn(expect: Expect, outcome: TurnOutcome) -> list[Check]:
    """The checks of every expectation the turn states except `judge`. The status comes first
    (a failed reply explains the failures after it); a turn that states none is checked for
    `complete`, reported only when that fails."""
    checks = [_status(expect.status or "complete", outcome)]
    if expect.status is None and checks[0].passed:
        checks = []  # the implicit status is reported only when it fails
    if expect.tool_calls:
        checks.append(_tool_calls(expect.tool_calls, outcome))
    if expect.no_tool_calls:
        calls = outcome.tool_calls
        checks.append(Check("no_tool_calls", True, not calls, _calls_seen(calls)))
    reply = outcome.reply.casefold()
    for text in expect.reply_contains:
        checks.append(Check("reply_contains", text, text.casefold() in reply, _reply_seen(outcome)))
    for text in expect.reply_not_contains:
        checks.append(
            Check("reply_not_contains", text, text.casefold() not in reply, _reply_seen(outcome))
        )
    if expect.reply_matches is not None:
        matched = re.search(expect.reply_matches, outcome.reply) is not None
        checks.append(Check("reply_matches", expect.reply_matches, matched, _reply_seen(outcome)))
    if expect.max_first_token_ms is not None:
        ms = outcome.first_token_ms
        ok = ms is not None and ms <= expect.max_first_token_ms
        seen = f"{ms:.0f} ms" if ms is not None else "no streamed text"
        checks.append(Check("max_first_token_ms", expect.max_first_token_ms, ok, seen))
    return checks
