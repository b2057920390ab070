"""Loading tool plugins from the `voicestack.tools` entry-point group into a ToolSet.

Each entry point names a Tool, a list or tuple of Tools, or a module (every top-level Tool in it;
a module may also bring server functions and `MIGRATIONS`, picked up through `ToolSet.apps()`).
`VOICESTACK_LOAD_TOOLS` (comma-separated entry-point names; unset loads all, empty loads none)
limits what loads, so tests run with only the plugins they name. A plugin that fails to load is
recorded as a PluginFailure and never stops the others or the server.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

from voicestack.agent.tools import Tool, exception_text
from voicestack.functions.apps import App, app_from_module

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "voicestack.tools"
LOAD_TOOLS_ENV = "VOICESTACK_LOAD_TOOLS"
_MAX_NAME = 64


@dataclass(frozen=True)
class PluginFailure:
    """A plugin entry point that could not be loaded, with the error that stopped it."""

    plugin: str
    entry_point: str
    error: str

    def describe(self) -> dict[str, Any]:
        """The failure as an entry of GET /api/tools."""
        return {
            "name": self.entry_point,
            "description": "",
            "schema": None,
            "plugin": self.plugin,
            "status": "failed",
            "error": self.error,
        }


@dataclass(frozen=True)
class LoadedPlugin:
    """What one entry point resolved to: a module, a Tool or a sequence of Tools."""

    plugin: str
    entry_point: str
    obj: object


@dataclass
class ToolSet:
    """The tools a server offers the model, by unique name, and the plugins that failed to load."""

    tools: list[Tool] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    modules: list[LoadedPlugin] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_name = {t.name: t for t in self.tools}
        if len(self._by_name) != len(self.tools):
            raise ValueError("Tool names in a ToolSet must be unique.")

    def get(self, name: str) -> Tool | None:
        """The tool called `name`, or None."""
        return self._by_name.get(name)

    def describe(self) -> list[dict[str, Any]]:
        """Loaded tools, then failed plugins, as listed by GET /api/tools."""
        return [t.describe() for t in self.tools] + [f.describe() for f in self.failures]

    def openai_specs(self) -> list[dict[str, Any]]:
        """Every loaded tool as an entry of an OpenAI chat completion's `tools` list."""
        return [t.openai_spec() for t in self.tools]

    def apps(self) -> list[App]:
        """The server functions and migrations of plugins that are modules, one App per module.

        An App is named after its plugin (the distribution), which keys its migrations; a
        distribution with several module entry points gets `plugin/entry_point` names instead.
        """
        # Two entry points naming one module bring its functions once.
        modules = {
            id(p.obj): (p, p.obj) for p in self.modules if isinstance(p.obj, ModuleType)
        }.values()
        per_plugin = Counter(loaded.plugin for loaded, _ in modules)
        apps = []
        for loaded, module in modules:
            shared = per_plugin[loaded.plugin] > 1
            name = f"{loaded.plugin}/{loaded.entry_point}" if shared else loaded.plugin
            apps.append(app_from_module(module, name=name))
        return apps


def _plugin_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None and dist.name else ep.name


def _tools_of(obj: object, entry_point: str) -> list[Tool]:
    if isinstance(obj, Tool):
        return [obj]
    if isinstance(obj, ModuleType):
        # One Tool bound to several names in a module is still one tool.
        return list({id(v): v for v in vars(obj).values() if isinstance(v, Tool)}.values())
    if isinstance(obj, list | tuple) and all(isinstance(v, Tool) for v in obj):
        return list(obj)
    raise TypeError(
        f"entry point {entry_point!r} resolved to {type(obj).__name__}; it must name a Tool, "
        "a list of Tools or a module."
    )


def _wanted_names() -> set[str] | None:
    wanted = os.environ.get(LOAD_TOOLS_ENV)
    return None if wanted is None else {n.strip() for n in wanted.split(",") if n.strip()}


def _unique_name(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    number = 2
    while True:
        suffix = f"_{number}"
        candidate = name[: _MAX_NAME - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
        number += 1


class _Collector:
    """Adds tools under unique names, in load order."""

    def __init__(self) -> None:
        self.tools: list[Tool] = []
        self.taken: set[str] = set()

    def add(self, tool: Tool, plugin: str | None) -> None:
        name = _unique_name(tool.name, self.taken)
        if name != tool.name:
            log.warning(
                "tool %r of %s is already taken; it is offered as %r",
                tool.name,
                plugin or tool.plugin or "voicestack",
                name,
            )
        changes: dict[str, Any] = {"name": name}
        if plugin is not None:
            changes["plugin"] = plugin
        self.tools.append(dataclasses.replace(tool, **changes))
        self.taken.add(name)


def load_tools(extra: Iterable[Tool] = ()) -> ToolSet:
    """`extra` tools, then every plugin's tools from the `voicestack.tools` entry points."""
    collector = _Collector()
    for tool in extra:
        collector.add(tool, None)
    failures: list[PluginFailure] = []
    loaded: list[LoadedPlugin] = []
    wanted = _wanted_names()
    found: set[str] = set()
    eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, _plugin_name(e)))
    for ep in eps:
        if wanted is not None and ep.name not in wanted:
            continue
        found.add(ep.name)
        plugin = _plugin_name(ep)
        try:
            obj = ep.load()
            tools = _tools_of(obj, ep.name)
        except Exception as exc:
            log.warning("tool plugin %s (%s) failed to load", plugin, ep.name, exc_info=True)
            failures.append(PluginFailure(plugin, ep.name, exception_text(exc)))
            continue
        loaded.append(LoadedPlugin(plugin, ep.name, obj))
        for tool in tools:
            collector.add(tool, plugin)
    for missing in sorted((wanted or set()) - found):
        log.warning("%s names %r, which no installed plugin provides", LOAD_TOOLS_ENV, missing)
        failures.append(
            PluginFailure(
                "",
                missing,
                f"LookupError: no installed plugin has the entry point {missing!r} "
                f"in group {ENTRY_POINT_GROUP!r}",
            )
        )
    return ToolSet(collector.tools, failures, loaded)
