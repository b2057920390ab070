"""Loading apps: Python modules that bring server functions and migrations.

An app is a module named with `--app mypkg.mymodule` or published in the entry-point group
`voicestack.apps`. Every ServerFunction found at its top level is registered; its `MIGRATIONS`
(a list of SQL strings or Migration objects) run in order, once, before the server starts; its
`CRONS` (a list of voicestack.scheduler.cron.Cron) are the schedules its jobs run on; its
`AGENTS` (a list of voicestack.Agent) are checked and registered by the agent layer.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from voicestack.functions.cron import Cron
from voicestack.functions.registry import ServerFunction
from voicestack.store.migrations import Migration

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "voicestack.apps"
# Comma-separated entry-point names to load; unset loads every installed app, empty loads none.
LOAD_APPS_ENV = "VOICESTACK_LOAD_APPS"


@dataclass(frozen=True)
class App:
    """An app's name, its functions, its migrations, its cron schedules and its agents."""

    name: str
    functions: tuple[ServerFunction, ...]
    migrations: tuple[Migration, ...]
    crons: tuple[Cron, ...] = ()
    agents: tuple[Any, ...] = ()  # voicestack.Agent, which this layer does not know


def _migration(index: int, item: Any) -> Migration:
    if isinstance(item, Migration):
        return item
    if isinstance(item, str):
        return Migration(f"migration_{index}", item)
    raise TypeError(f"MIGRATIONS[{index}] must be an SQL string or a Migration, not {item!r}.")


def app_from_module(module: ModuleType, name: str | None = None) -> App:
    """The App a module defines: its top-level ServerFunctions, MIGRATIONS, CRONS and AGENTS."""
    functions = tuple(v for v in vars(module).values() if isinstance(v, ServerFunction))
    raw = getattr(module, "MIGRATIONS", ())
    migrations = tuple(_migration(i, item) for i, item in enumerate(raw, start=1))
    crons = tuple(getattr(module, "CRONS", ()))
    for index, cron in enumerate(crons):
        if not isinstance(cron, Cron):
            raise TypeError(f"CRONS[{index}] of {module.__name__} must be a Cron, not {cron!r}.")
    agents = tuple(getattr(module, "AGENTS", ()))
    return App(name or module.__name__, functions, migrations, crons, agents)


def load_module_app(path: str) -> App:
    """Import `path` (dotted module name) and return its App; import errors propagate."""
    return app_from_module(importlib.import_module(path))


def load_entry_point_apps() -> list[App]:
    """Apps in the `voicestack.apps` entry-point group, limited by VOICESTACK_LOAD_APPS."""
    wanted = os.environ.get(LOAD_APPS_ENV)
    names = None if wanted is None else {n.strip() for n in wanted.split(",") if n.strip()}
    apps = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if names is not None and ep.name not in names:
            continue
        loaded = ep.load()
        if isinstance(loaded, ModuleType):
            apps.append(app_from_module(loaded, ep.name))
        elif isinstance(loaded, App):
            apps.append(loaded)
        else:
            raise TypeError(f"Entry point {ep.name!r} must name a module or an App.")
    return apps
