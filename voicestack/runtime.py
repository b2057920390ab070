"""The Runtime ties a server together: store, loaded apps, function registry and hub."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from voicestack.config import Settings
from voicestack.functions.apps import App, load_entry_point_apps, load_module_app
from voicestack.functions.context import ActionCtx, Caller, MutationCtx, QueryCtx
from voicestack.functions.errors import FunctionError
from voicestack.functions.registry import Kind, Registry, ServerFunction
from voicestack.reactive.hub import Hub
from voicestack.store.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CallResult:
    """A function's value and the database version it reflects."""

    value: Any
    version: int


class UnknownFunction(FunctionError):
    """No function of that name (and kind) is registered."""

    def __init__(self, name: str, kind: Kind | None = None, actual: Kind | None = None) -> None:
        if actual is not None and kind is not None:
            super().__init__(
                "wrong_function_kind",
                f"{name!r} is a {actual}, not a {kind}: call it at /api/{actual}/{name}.",
                400,
            )
        else:
            super().__init__(
                "unknown_function",
                f"No function is named {name!r}; GET /api/functions lists them.",
                404,
            )


class Runtime:
    """A running voicestack: call functions by name, subscribe to queries, close cleanly."""

    def __init__(self, settings: Settings, apps: list[App] | None = None) -> None:
        self.settings = settings
        self.registry = Registry()
        self.apps = apps if apps is not None else self._load_apps(settings)
        self.store = Store(
            settings.db,
            readers=settings.readers,
            autocheckpoint=not settings.no_autocheckpoint,
            log_keep=settings.change_log_keep,
        )
        for app in self.apps:
            self.registry.add_all(app.functions, app.name)
            self.store.migrate_app(app.name, app.migrations)
        self.store.start()
        self.hub = Hub(self.store, settings.ping_s, settings.send_timeout_s)

    @staticmethod
    def _load_apps(settings: Settings) -> list[App]:
        apps = load_entry_point_apps()
        apps += [load_module_app(path) for path in settings.apps]
        return apps

    async def start(self) -> None:
        """Start the hub on the running event loop."""
        await self.hub.start()

    def function(self, name: str, kind: Kind) -> ServerFunction:
        """The registered function `name` of `kind`; raises UnknownFunction otherwise."""
        function = self.registry.get(name)
        if function is None:
            raise UnknownFunction(name)
        if function.kind != kind:
            raise UnknownFunction(name, kind, function.kind)
        return function

    async def query(self, name: str, args: Any, user: Caller | None) -> CallResult:
        """Run query `name` on a reader snapshot."""
        function = self.function(name, "query")
        parsed = function.parse_args(args)

        def run(snapshot: Any) -> CallResult:
            ctx = QueryCtx(snapshot.db(), user, snapshot.version)
            return CallResult(function.invoke(ctx, parsed), snapshot.version)

        return await self.store.read(run)

    async def mutation(self, name: str, args: Any, user: Caller | None) -> CallResult:
        """Run mutation `name` in the next group commit; returns after COMMIT."""
        function = self.function(name, "mutation")
        parsed = function.parse_args(args)
        result = await self.store.write(lambda db: function.invoke(MutationCtx(db, user), parsed))
        return CallResult(result.value, result.version)

    async def action(self, name: str, args: Any, user: Caller | None) -> CallResult:
        """Run action `name` on the event loop; its version is the newest after it returns."""
        function = self.function(name, "action")
        parsed = function.parse_args(args)
        ctx = ActionCtx(user, self._query_value, self._mutation_value)
        value = await function.invoke(ctx, parsed)
        return CallResult(value, await self.store.read(lambda s: s.version))

    async def _query_value(self, name: str, args: Any, user: Caller | None) -> Any:
        return (await self.query(name, args, user)).value

    async def _mutation_value(self, name: str, args: Any, user: Caller | None) -> Any:
        return (await self.mutation(name, args, user)).value

    async def close(self) -> None:
        """Close every stream, commit every queued mutation, and close the database."""
        await self.hub.close()
        self.store.close()
