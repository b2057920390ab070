"""Server functions: `@query`, `@mutation`, `@action` and the registry that holds them by name."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Kind = Literal["query", "mutation", "action"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class NoArgs(BaseModel):
    """Arguments of a function that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ServerFunction:
    """A named query, mutation or action with the pydantic model that validates its arguments."""

    name: str
    kind: Kind
    fn: Callable[..., Any]
    args_model: type[BaseModel]
    description: str = ""
    app: str = ""
    takes_args: bool = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def invoke(self, ctx: Any, args: BaseModel) -> Any:
        """Call the function with `ctx` and, when it takes them, its validated `args`."""
        return self.fn(ctx, args) if self.takes_args else self.fn(ctx)

    def parse_args(self, raw: Any) -> BaseModel:
        """Validated arguments; raises pydantic.ValidationError when they do not fit."""
        return self.args_model.model_validate({} if raw is None else raw)

    def describe(self) -> dict[str, Any]:
        """The function as listed by GET /api/functions."""
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "app": self.app,
            "args": self.args_model.model_json_schema(),
        }


def _args_model(fn: Callable[..., Any]) -> type[BaseModel]:
    params = list(inspect.signature(fn).parameters.values())
    if len(params) < 2:
        return NoArgs
    hints = typing.get_type_hints(fn)
    model = hints.get(params[1].name)
    if not (inspect.isclass(model) and issubclass(model, BaseModel)):
        raise TypeError(
            f"{fn.__qualname__}: annotate its second parameter with a pydantic model "
            "(the function's arguments), or take only `ctx`."
        )
    return model


def _decorator(kind: Kind, name: str) -> Callable[[Callable[..., Any]], ServerFunction]:
    if not _NAME.match(name):
        raise ValueError(
            f"Function name {name!r} must be dotted identifiers, such as 'todos.list'."
        )

    def wrap(fn: Callable[..., Any]) -> ServerFunction:
        if kind == "action" and not inspect.iscoroutinefunction(fn):
            raise TypeError(f"Action {name!r} must be an async function.")
        if kind != "action" and inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"{kind.capitalize()} {name!r} must be a plain function: it runs on a database "
                "thread. Use @action for async work."
            )
        doc = inspect.getdoc(fn) or ""
        takes_args = len(inspect.signature(fn).parameters) >= 2
        return ServerFunction(
            name, kind, fn, _args_model(fn), doc.split("\n\n")[0], takes_args=takes_args
        )

    return wrap


def query(name: str) -> Callable[[Callable[..., Any]], ServerFunction]:
    """Register a read-only, deterministic function `fn(ctx: QueryCtx, args: Model)` as `name`."""
    return _decorator("query", name)


def mutation(name: str) -> Callable[[Callable[..., Any]], ServerFunction]:
    """Register a transactional function `fn(ctx: MutationCtx, args: Model)` as `name`."""
    return _decorator("mutation", name)


def action(name: str) -> Callable[[Callable[..., Any]], ServerFunction]:
    """Register an async function `fn(ctx: ActionCtx, args: Model)` that may call out, as `name`."""
    return _decorator("action", name)


@dataclass
class Registry:
    """Every server function of a running server, by name; names are unique."""

    functions: dict[str, ServerFunction] = field(default_factory=dict)

    def add(self, function: ServerFunction, app: str = "") -> None:
        """Register `function`; a second function with the same name is an error."""
        if function.name in self.functions:
            other = self.functions[function.name]
            raise ValueError(
                f"Function {function.name!r} of {app or 'voicestack'} is already registered "
                f"by {other.app or 'voicestack'}."
            )
        self.functions[function.name] = dataclasses.replace(function, app=app or function.app)

    def add_all(self, functions: Iterable[ServerFunction], app: str = "") -> None:
        """Register several functions."""
        for function in functions:
            self.add(function, app)

    def get(self, name: str) -> ServerFunction | None:
        """The function called `name`, or None."""
        return self.functions.get(name)

    def describe(self) -> list[dict[str, Any]]:
        """Every function, sorted by name, as listed by GET /api/functions."""
        return [self.functions[n].describe() for n in sorted(self.functions)]
