"""Scenario files: YAML documents (several per file, separated by `---`) read and checked.

Every problem is found before anything runs, each with its file and line, so that a nightly
run never stops halfway through on a typo. The YAML is composed into nodes first (they know
their line) and turned into Scenario objects by hand, key by key.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

SCENARIO_KEYS = ("name", "agent", "turns")
TURN_KINDS = ("user", "say")
TURN_KEYS = (*TURN_KINDS, "expect")
EXPECT_KEYS = (
    "reply_contains",
    "reply_not_contains",
    "reply_matches",
    "tool_calls",
    "no_tool_calls",
    "status",
    "max_first_token_ms",
    "judge",
)
STATUSES = ("complete", "failed", "interrupted")
SUFFIXES = (".yaml", ".yml")
MAX_NAME = 194  # the thread's title, `eval: NAME`, may have 200 characters
TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _Loader(yaml.SafeLoader):
    """The safe loader, except that an unquoted date stays text (`day: 2026-12-04` is the
    string a tool call's arguments hold, never a date object)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _BadValue(Exception):
    """A value that cannot be constructed (an unknown `!tag`); the problem is noted."""


@dataclass(frozen=True)
class ToolCallSpec:
    """A tool call a turn expects: its name and a subset of its arguments."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Expect:
    """What a turn's reply must show; unset fields are not checked (DESIGN §11)."""

    reply_contains: tuple[str, ...] = ()
    reply_not_contains: tuple[str, ...] = ()
    reply_matches: str | None = None
    tool_calls: tuple[ToolCallSpec, ...] = ()
    no_tool_calls: bool = False
    status: str | None = None
    max_first_token_ms: float | None = None
    judge: str | None = None


@dataclass(frozen=True)
class Turn:
    """One turn: typed (`user`) or spoken (`say`) text, and what its reply must show."""

    kind: str
    text: str
    expect: Expect
    line: int


@dataclass(frozen=True)
class Scenario:
    """A named conversation with an agent (None: the one `--agent` or the server chooses)."""

    name: str
    agent: str | None
    turns: tuple[Turn, ...]
    file: str
    line: int

    @property
    def uses_judge(self) -> bool:
        """True when a turn has a `judge` expectation."""
        return any(turn.expect.judge is not None for turn in self.turns)


@dataclass(frozen=True)
class Problem:
    """Something wrong in a scenario file, where it is."""

    file: str
    line: int | None  # None: the file (or folder) as a whole
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


def scenario_files(paths: Sequence[Path], problems: list[Problem]) -> list[Path]:
    """The files `paths` name: files as given, folders as their *.yaml files (recursively)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
            if not found:
                problems.append(Problem(str(path), None, "the folder holds no *.yaml file"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(str(path), None, "no such file or folder"))
    return files


def load_scenarios(paths: Sequence[Path]) -> tuple[list[Scenario], list[Problem]]:
    """Every scenario of every file, and every problem found (the scenarios only count when
    there are none). Scenario names must be unique: reports are keyed by them."""
    problems: list[Problem] = []
    scenarios: list[Scenario] = []
    for path in scenario_files(paths, problems):
        scenarios.extend(_FileReader(path, problems).scenarios())
    seen: dict[str, Scenario] = {}
    for scenario in scenarios:
        first = seen.setdefault(scenario.name, scenario)
        if first is not scenario:
            where = f"{first.file}:{first.line}"
            problems.append(
                Problem(
                    scenario.file, scenario.line, f"the name {scenario.name!r} is used at {where}"
                )
            )
    problems.sort(key=lambda p: (p.file, p.line or 0))  # stable: a line's problems keep order
    if not scenarios and not problems:
        problems.append(Problem(", ".join(map(str, paths)), None, "no scenario found"))
    return scenarios, problems


def _close(word: str, allowed: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, allowed, n=1)
    hint = f"did you mean {match[0]!r}? " if match else ""
    return f"{hint}allowed: {', '.join(allowed)}"


class _FileReader:
    """Turns one file's YAML nodes into scenarios, noting problems instead of raising."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.path = path
        self.file = str(path)
        self.problems = problems
        self.constructor = SafeConstructor()

    def problem(self, node: yaml.Node | None, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.problems.append(Problem(self.file, line, message))

    def scenarios(self) -> list[Scenario]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.problems.append(Problem(self.file, None, f"cannot read it: {exc}"))
            return []
        try:
            documents = list(yaml.compose_all(text, Loader=_Loader))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            what = exc.problem or "cannot be parsed"
            what += f" ({exc.context})" if exc.context else ""
            self.problems.append(Problem(self.file, line, f"not valid YAML: {what}"))
            return []
        except yaml.YAMLError as exc:
            self.problems.append(Problem(self.file, 1, f"not valid YAML: {exc}"))
            return []
        found = []
        for node in documents:
            if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
                continue  # an empty document, as after a trailing `---`
            try:
                scenario = self.scenario(node)
            except _BadValue:
                continue
            if scenario is not None:
                found.append(scenario)
        return found

    def value(self, node: yaml.Node) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else node.start_mark.line + 1
            self.problems.append(Problem(self.file, line, f"not valid YAML: {exc.problem}"))
        except (yaml.YAMLError, ValueError, TypeError) as exc:  # `!!int abc`, say
            self.problem(node, f"not valid YAML: {exc}")
        raise _BadValue

    def mapping(self, node: yaml.Node, what: str, keys: Sequence[str]) -> dict[str, yaml.Node]:
        """The mapping's value nodes by key; unknown and repeated keys are problems."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} must be a mapping with keys {', '.join(keys)}")
            return {}
        found: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if not isinstance(key, str) or key not in keys:
                self.problem(key_node, f"unknown key {key!r} in {what}; {_close(str(key), keys)}")
            elif key in found:
                self.problem(key_node, f"{key!r} appears twice in {what}")
            else:
                found[key] = value_node
        return found

    def text(self, node: yaml.Node, what: str) -> str | None:
        value = self.value(node)
        if not isinstance(value, str) or not value.strip():
            self.problem(node, f"{what} must be a non-empty text, not {value!r}")
            return None
        return value

    def texts(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        """A text or a list of texts."""
        if isinstance(node, yaml.SequenceNode):
            items = [self.text(item, f"each of {what}") for item in node.value]
            if not items:
                self.problem(node, f"{what} must not be empty")
            return tuple(item for item in items if item is not None)
        one = self.text(node, f"{what} (a text or a list of texts)")
        return (one,) if one is not None else ()

    def scenario(self, node: yaml.Node) -> Scenario | None:
        parts = self.mapping(node, "a scenario", SCENARIO_KEYS)
        if not parts:
            return None
        before = len(self.problems)
        name = self.text(parts["name"], "name") if "name" in parts else None
        if "name" not in parts:
            self.problem(node, "a scenario needs a name")
        elif name is not None and len(name.strip()) > MAX_NAME:
            self.problem(parts["name"], f"name is longer than {MAX_NAME} characters")
        agent = self.text(parts["agent"], "agent") if "agent" in parts else None
        turns: list[Turn] = []
        if "turns" not in parts:
            self.problem(node, "a scenario needs turns: a list of `user:` or `say:` turns")
        elif not isinstance(parts["turns"], yaml.SequenceNode) or not parts["turns"].value:
            self.problem(
                parts["turns"], "turns must be a non-empty list of `user:` or `say:` turns"
            )
        else:
            for item in parts["turns"].value:
                turn = self.turn(item)
                if turn is not None:
                    turns.append(turn)
        if len(self.problems) > before or name is None:
            return None
        line = node.start_mark.line + 1
        return Scenario(name.strip(), agent and agent.strip(), tuple(turns), self.file, line)

    def turn(self, node: yaml.Node) -> Turn | None:
        parts = self.mapping(node, "a turn", TURN_KEYS)
        kinds = [kind for kind in TURN_KINDS if kind in parts]
        if len(kinds) != 1:
            if parts or isinstance(node, yaml.MappingNode):
                self.problem(node, "a turn has exactly one of `user:` (typed) or `say:` (spoken)")
            return None
        text = self.text(parts[kinds[0]], kinds[0])
        expect = self.expect(parts["expect"]) if "expect" in parts else Expect()
        if text is None or expect is None:
            return None
        return Turn(kinds[0], text, expect, node.start_mark.line + 1)

    def expect(self, node: yaml.Node) -> Expect | None:
        parts = self.mapping(node, "expect", EXPECT_KEYS)
        before = len(self.problems)
        fields: dict[str, Any] = {}
        for key in ("reply_contains", "reply_not_contains"):
            if key in parts:
                fields[key] = self.texts(parts[key], key)
        if "reply_matches" in parts:
            pattern = self.text(parts["reply_matches"], "reply_matches")
            if pattern is not None:
                try:
                    re.compile(pattern)
                    fields["reply_matches"] = pattern
                except re.error as exc:
                    self.problem(parts["reply_matches"], f"reply_matches is not a regex: {exc}")
        if "tool_calls" in parts:
            fields["tool_calls"] = self.tool_calls(parts["tool_calls"])
        if "no_tool_calls" in parts:
            value = self.value(parts["no_tool_calls"])
            if value is not True:
                self.problem(parts["no_tool_calls"], f"no_tool_calls must be true, not {value!r}")
            fields["no_tool_calls"] = True
            if "tool_calls" in parts:
                self.problem(parts["no_tool_calls"], "a turn expects tool_calls or no_tool_calls")
        if "status" in parts:
            status = self.value(parts["status"])
            if status not in STATUSES:
                self.problem(parts["status"], f"status must be one of {', '.join(STATUSES)}")
            fields["status"] = status
        if "max_first_token_ms" in parts:
            limit = self.value(parts["max_first_token_ms"])
            if (
                isinstance(limit, bool)
                or not isinstance(limit, int | float)
                or not math.isfinite(limit)
                or limit <= 0
            ):
                self.problem(
                    parts["max_first_token_ms"],
                    f"max_first_token_ms must be a positive finite number, not {limit!r}",
                )
            fields["max_first_token_ms"] = limit
        if "judge" in parts:
            fields["judge"] = self.text(parts["judge"], "judge")
        if len(self.problems) > before:
            return None
        return Expect(**fields)

    def tool_calls(self, node: yaml.Node) -> tuple[ToolCallSpec, ...]:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.problem(node, "tool_calls must be a non-empty list of {name, args}")
            return ()
        specs = []
        for item in node.value:
            parts = self.mapping(item, "a tool call", ("name", "args"))
            if "name" not in parts:
                if parts or isinstance(item, yaml.MappingNode):
                    self.problem(item, "a tool call needs a name")
                continue
            name = self.text(parts["name"], "a tool call's name")
            args = self.value(parts["args"]) if "args" in parts else {}
            if not isinstance(args, dict):
                self.problem(parts["args"], f"a tool call's args must be a mapping, not {args!r}")
                continue
            if name is not None:
                specs.append(ToolCallSpec(name, args))
        return tuple(specs)
