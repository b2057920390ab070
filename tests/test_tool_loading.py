"""Loading tool plugins from entry points: which load, what fails, and names made unique."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.tools import draw, ping
from voicestack.agent.tool_loading import LOAD_TOOLS_ENV, PluginFailure, ToolSet, load_tools
from voicestack.agent.tools import NoToolArgs, Tool

CLOCK_TOOLS = [
    ("current_time", "voicestack-clock"),
    ("date_add", "voicestack-clock"),
    ("time_between", "voicestack-clock"),
]
NOTES_TOOLS = [("save_note", "voicestack-notes"), ("search_notes", "voicestack-notes")]


FakeDist = Callable[[str, dict[str, str], dict[str, str]], None]


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDist]:
    """Install a distribution by writing its dist-info and modules into a directory on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    modules: list[str] = []

    def install(name: str, entry_points: dict[str, str], sources: dict[str, str]) -> None:
        info = site / f"{name.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[voicestack.tools]\n{lines}")
        for module, source in sources.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            modules.append(module)

    monkeypatch.syspath_prepend(str(site))
    yield install
    for module in modules:
        sys.modules.pop(module, None)


def names(tool_set: ToolSet) -> list[tuple[str, str]]:
    return [(t.name, t.plugin) for t in tool_set.tools]


def test_installed_plugins_load_from_their_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOAD_TOOLS_ENV, "clock,notes")
    tool_set = load_tools()
    assert names(tool_set) == CLOCK_TOOLS + NOTES_TOOLS
    assert tool_set.failures == []
    assert tool_set.get("date_add") is tool_set.tools[1]
    assert tool_set.get("nope") is None
    assert [spec["function"]["name"] for spec in tool_set.openai_specs()] == [
        name for name, _ in CLOCK_TOOLS + NOTES_TOOLS
    ]
    assert [(p.plugin, p.entry_point) for p in tool_set.modules] == [
        ("voicestack-clock", "clock"),
        ("voicestack-notes", "notes"),
    ]
    apps = tool_set.apps()
    assert [(a.name, [f.name for f in a.functions]) for a in apps] == [
        ("voicestack-clock", []),
        ("voicestack-notes", ["notes.list"]),
    ]
    assert [m.name for m in apps[1].migrations] == ["notes", "notes_search"]


def test_without_the_variable_every_installed_plugin_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOAD_TOOLS_ENV, raising=False)
    loaded = names(load_tools())
    assert [t for t in loaded if t in CLOCK_TOOLS + NOTES_TOOLS] == CLOCK_TOOLS + NOTES_TOOLS


def test_the_variable_limits_what_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOAD_TOOLS_ENV, " notes ")
    assert names(load_tools()) == NOTES_TOOLS
    monkeypatch.setenv(LOAD_TOOLS_ENV, "")
    empty = load_tools([draw])
    assert (names(empty), empty.failures, empty.modules) == ([("draw", "")], [], [])


def test_a_named_plugin_that_is_not_installed_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOAD_TOOLS_ENV, "clock,weather")
    tool_set = load_tools()
    assert names(tool_set) == CLOCK_TOOLS
    assert tool_set.failures == [
        PluginFailure(
            "",
            "weather",
            "LookupError: no installed plugin has the entry point 'weather' in group "
            "'voicestack.tools'",
        )
    ]


def test_a_broken_plugin_is_reported_not_raised(
    fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist(
        "broken-plugin",
        {"broken": "broken_tools_plugin", "weird": "weird_tools_plugin:VALUE"},
        {
            "broken_tools_plugin": "raise ImportError('needs the frobnicator library')\n",
            "weird_tools_plugin": "VALUE = 42\n",
        },
    )
    monkeypatch.setenv(LOAD_TOOLS_ENV, "broken,clock,weird")
    tool_set = load_tools()
    assert names(tool_set) == CLOCK_TOOLS
    assert tool_set.failures == [
        PluginFailure("broken-plugin", "broken", "ImportError: needs the frobnicator library"),
        PluginFailure(
            "broken-plugin",
            "weird",
            "TypeError: entry point 'weird' resolved to int; it must name a Tool, a list of "
            "Tools or a module.",
        ),
    ]
    described = tool_set.describe()
    assert [d["name"] for d in described] == [name for name, _ in CLOCK_TOOLS] + [
        "broken",
        "weird",
    ]
    assert described[-2] == {
        "name": "broken",
        "description": "",
        "schema": None,
        "plugin": "broken-plugin",
        "status": "failed",
        "error": "ImportError: needs the frobnicator library",
    }


def test_entry_points_may_name_a_tool_or_a_list(
    fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = """
        from voicestack.agent.tools import tool

        @tool
        async def one(ctx):
            "One."
            return 1

        @tool
        async def two(ctx):
            "Two."
            return 2

        BOTH = [one, two]
    """
    fake_dist(
        "pair-plugin",
        {"single": "pair_tools:one", "pair": "pair_tools:BOTH"},
        {"pair_tools": source},
    )
    monkeypatch.setenv(LOAD_TOOLS_ENV, "pair,single")
    tool_set = load_tools()
    # Entry points load in name order; the same tool twice is offered under two names.
    assert names(tool_set) == [
        ("one", "pair-plugin"),
        ("two", "pair-plugin"),
        ("one_2", "pair-plugin"),
    ]
    assert tool_set.apps() == []


def test_duplicate_names_are_made_unique_with_a_warning(
    fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    source = """
        from voicestack.agent.tools import tool

        @tool
        async def current_time(ctx):
            "The time on Mars."
            return "sol 1"

        alias = current_time
    """
    fake_dist("mars-clock", {"mars": "mars_tools"}, {"mars_tools": source})
    monkeypatch.setenv(LOAD_TOOLS_ENV, "clock,mars")
    long_name = "x" * 64
    extra = [draw, draw, Tool(long_name, "", NoToolArgs, ping.run)]
    extra.append(Tool(long_name, "", NoToolArgs, ping.run, plugin="builtin"))
    with caplog.at_level(logging.WARNING, logger="voicestack.agent.tool_loading"):
        tool_set = load_tools(extra)
    assert names(tool_set) == [
        ("draw", ""),
        ("draw_2", ""),
        (long_name, ""),
        ("x" * 62 + "_2", "builtin"),
        *CLOCK_TOOLS,
        ("current_time_2", "mars-clock"),
    ]
    assert tool_set.get("current_time_2").description == "The time on Mars."
    assert [r.getMessage() for r in caplog.records] == [
        "tool 'draw' of voicestack is already taken; it is offered as 'draw_2'",
        f"tool '{long_name}' of builtin is already taken; it is offered as '{'x' * 62}_2'",
        "tool 'current_time' of mars-clock is already taken; it is offered as 'current_time_2'",
    ]


def test_a_tool_set_refuses_duplicate_names() -> None:
    with pytest.raises(ValueError, match="must be unique"):
        ToolSet([draw, draw])
