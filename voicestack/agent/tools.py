"""Tools a model may call: the Tool object, the `@tool` decorator, ToolCtx, argument checks, runs.

A tool is data: a name, a description, a pydantic model for its arguments and an async function
`run(ctx, args)`. Plugins publish tools through entry points (see `tool_loading`); the reply
runner validates the model's arguments with `parse_tool_args` and runs the tool with `run_tool`,
which turns every failure of the tool into an error result for the model instead of a crash.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ValidationError

from voicestack import jsoncodec
from voicestack.functions.registry import NoArgs
from voicestack.identity import Caller
from voicestack.store.db import ReadDB, WriteDB
from voicestack.store.store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")

# OpenAI's rule for function names; other OpenAI-compatible servers accept the same.
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
# Progress is shown in a UI row and stored with the tool call: keep it small.
_MAX_PROGRESS_TEXT = 200
_MAX_PROGRESS_BYTES = 2048
_MAX_SHOWN_INPUT = 80

ToolRun = Callable[["ToolCtx", Any], Awaitable[Any]]
Progress = float | str | dict[str, Any]


class NoToolArgs(NoArgs):
    """The arguments of a tool that takes none."""


@dataclass(frozen=True)
class Tool:
    """A tool a model may call: name, description, argument model and its async implementation."""

    name: str
    description: str
    args_model: type[BaseModel]
    run: ToolRun
    needs_approval: bool = False
    timeout_s: float | None = None
    plugin: str = ""

    def __post_init__(self) -> None:
        if not _TOOL_NAME.fullmatch(self.name):
            raise ValueError(
                f"Tool name {self.name!r} must be 1 to 64 letters, digits, '_' or '-'."
            )
        if not (inspect.isclass(self.args_model) and issubclass(self.args_model, BaseModel)):
            raise TypeError(f"Tool {self.name!r}: args_model must be a pydantic BaseModel class.")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"Tool {self.name!r}: timeout_s must be positive or None.")

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the tool's arguments."""
        return self.args_model.model_json_schema()

    def openai_spec(self) -> dict[str, Any]:
        """The tool as an entry of the `tools` list of an OpenAI chat completion request."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.schema(),
            },
        }

    def describe(self) -> dict[str, Any]:
        """The tool as listed by GET /api/tools."""
        return {
            "name": self.name,
            "description": self.description,
            "schema": self.schema(),
            "plugin": self.plugin,
            "status": "loaded",
            "error": None,
        }


def _first_paragraph(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _tool_args_model(fn: Callable[..., Any]) -> type[BaseModel]:
    params = list(inspect.signature(fn).parameters.values())
    if len(params) == 1:
        return NoToolArgs
    if len(params) != 2:
        raise TypeError(f"Tool {fn.__qualname__} must take (ctx) or (ctx, args).")
    try:
        model = typing.get_type_hints(fn).get(params[1].name)
    except NameError as exc:
        raise TypeError(
            f"Tool {fn.__qualname__}: cannot resolve its annotations ({exc}); import the "
            "argument model at module level."
        ) from exc
    if not (inspect.isclass(model) and issubclass(model, BaseModel)):
        raise TypeError(
            f"Tool {fn.__qualname__}: annotate its second parameter with a pydantic model "
            "(the tool's arguments), or take only `ctx`."
        )
    return model


def _without_args(fn: Callable[[ToolCtx], Awaitable[Any]]) -> ToolRun:
    @functools.wraps(fn)
    async def run(ctx: ToolCtx, _args: Any) -> Any:
        return await fn(ctx)

    return run


def _make_tool(
    fn: Callable[..., Awaitable[Any]],
    name: str | None,
    description: str | None,
    needs_approval: bool,
    timeout_s: float | None,
) -> Tool:
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"Tool {fn.__qualname__} must be an async function.")
    args_model = _tool_args_model(fn)
    return Tool(
        name=name or fn.__name__,
        description=description if description is not None else _first_paragraph(fn),
        args_model=args_model,
        run=_without_args(fn) if args_model is NoToolArgs else fn,
        needs_approval=needs_approval,
        timeout_s=timeout_s,
    )


@overload
def tool(name: Callable[..., Awaitable[Any]], /) -> Tool: ...


@overload
def tool(
    name: str | None = None,
    *,
    description: str | None = None,
    needs_approval: bool = False,
    timeout_s: float | None = None,
) -> Callable[[Callable[..., Awaitable[Any]]], Tool]: ...


def tool(
    name: str | Callable[..., Awaitable[Any]] | None = None,
    *,
    description: str | None = None,
    needs_approval: bool = False,
    timeout_s: float | None = None,
) -> Tool | Callable[[Callable[..., Awaitable[Any]]], Tool]:
    """Turn `async def fn(ctx: ToolCtx, args: Model)` into a Tool (also usable bare: `@tool`)."""
    if callable(name):
        return _make_tool(name, None, description, needs_approval, timeout_s)

    def wrap(fn: Callable[..., Awaitable[Any]]) -> Tool:
        return _make_tool(fn, name, description, needs_approval, timeout_s)

    return wrap


class ToolCtx:
    """What a running tool receives: who asked, in which thread, and the database through them."""

    def __init__(
        self,
        *,
        user: Caller | None,
        thread_id: str,
        call_id: str,
        store: Store,
        run_query: Callable[[str, Any], Awaitable[Any]],
        run_mutation: Callable[[str, Any], Awaitable[Any]],
        report_progress: Callable[[Any], Awaitable[None]],
    ) -> None:
        self.user = user
        self.thread_id = thread_id
        self.call_id = call_id
        self._store = store
        self._run_query = run_query
        self._run_mutation = run_mutation
        self._report_progress = report_progress

    async def read(self, fn: Callable[[ReadDB], T]) -> T:
        """Run `fn(db)` on a read-only snapshot of the database and return its result."""
        return await self._store.read(lambda snapshot: fn(snapshot.db()))

    async def write(self, fn: Callable[[WriteDB], T]) -> T:
        """Run `fn(db)` as one mutation of the next group commit; returns its value after COMMIT."""
        return (await self._store.write(fn)).value

    async def run_query(self, name: str, args: Any = None) -> Any:
        """Run the server query `name` as this tool call's user and return its value."""
        return await self._run_query(name, args)

    async def run_mutation(self, name: str, args: Any = None) -> Any:
        """Run the server mutation `name` as this tool call's user, after its commit."""
        return await self._run_mutation(name, args)

    async def progress(self, value: Progress) -> None:
        """Report progress: a fraction 0..1, a short status text, or a small JSON object."""
        await self._report_progress(_checked_progress(value))


def _checked_progress(value: Progress) -> Progress:
    if isinstance(value, bool):
        raise TypeError("progress must be a number from 0 to 1, a short text or a small dict.")
    if isinstance(value, int | float):
        if not 0 <= value <= 1:
            raise ValueError(f"progress {value!r} is outside 0..1.")
        return float(value)
    if isinstance(value, str):
        return value[:_MAX_PROGRESS_TEXT]
    if isinstance(value, dict):
        if len(jsoncodec.dumps(value)) > _MAX_PROGRESS_BYTES:
            raise ValueError(f"progress objects must be at most {_MAX_PROGRESS_BYTES} bytes.")
        return value
    raise TypeError("progress must be a number from 0 to 1, a short text or a small dict.")


class ToolArgsError(ValueError):
    """The model's arguments do not fit the tool's schema; the message is written for the model."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _type_of(prop: dict[str, Any]) -> str:
    if "type" in prop:
        kind = prop["type"]
        if kind == "array" and isinstance(prop.get("items"), dict):
            return f"array of {_type_of(prop['items'])}"
        return kind if isinstance(kind, str) else " or ".join(kind)
    if "enum" in prop:
        return "one of " + ", ".join(json.dumps(v) for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    if "$ref" in prop:
        return "object"
    options = prop.get("anyOf") or prop.get("oneOf") or []
    return " or ".join(dict.fromkeys(_type_of(o) for o in options)) or "any"


def expected_arguments(tool: Tool) -> str:
    """A one-line summary of a tool's arguments, such as `title (string, required)`."""
    schema = tool.schema()
    properties: dict[str, Any] = schema.get("properties", {})
    if not properties:
        return "no arguments: send {}"
    required = set(schema.get("required", []))
    parts = []
    for key, prop in properties.items():
        if key in required:
            detail = "required"
        elif "default" in prop:
            detail = f"optional, default {json.dumps(prop['default'])}"
        else:
            detail = "optional"
        parts.append(f"{key} ({_type_of(prop)}, {detail})")
    return ", ".join(parts)


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(arguments)"


def _shown(value: Any) -> str:
    text = json.dumps(value, default=repr)
    if len(text) > _MAX_SHOWN_INPUT:
        text = text[: _MAX_SHOWN_INPUT - 1] + "…"
    return text


def _validation_lines(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors(include_url=False):
        # A validator's own ValueError message is already a sentence for the reader.
        message = item["msg"].removeprefix("Value error, ")
        line = f"- {_location(item['loc'])}: {message}"
        if item["type"] not in {"missing", "extra_forbidden"}:
            line += f" (got {_shown(item['input'])})"
        lines.append(line)
    return lines


def parse_tool_args(tool: Tool, arguments_json: str) -> BaseModel:
    """The tool's validated arguments from the model's JSON text; raises ToolArgsError."""
    expected = f"Expected arguments: {expected_arguments(tool)}."
    # Models send an empty string for tools without arguments.
    text = arguments_json.strip() or "{}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ToolArgsError(
            f"The arguments for tool {tool.name!r} are not valid JSON ({exc.msg} at line "
            f"{exc.lineno} column {exc.colno}). Send one JSON object. {expected}"
        ) from None
    if not isinstance(data, dict):
        raise ToolArgsError(
            f"The arguments for tool {tool.name!r} must be a JSON object, not "
            f"{_JSON_KINDS.get(type(data), 'null')}. {expected}"
        )
    try:
        return tool.args_model.model_validate(data)
    except ValidationError as exc:
        lines = "\n".join(_validation_lines(exc))
        raise ToolArgsError(
            f"Invalid arguments for tool {tool.name!r}:\n{lines}\n{expected}"
        ) from None


_JSON_KINDS = {
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
}


@dataclass(frozen=True)
class ToolOutcome:
    """How a tool call ended: its JSON result, or an error message for the model."""

    ok: bool
    result: Any
    error: str | None


def exception_text(exc: BaseException) -> str:
    """An exception as a model or a user reads it: `Type: message`, or `Type` alone."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


async def run_tool(
    tool: Tool, ctx: ToolCtx, args: BaseModel, timeout_s: float | None
) -> ToolOutcome:
    """Run `tool` within `timeout_s` seconds (None: no limit); every failure becomes an outcome."""
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            result = await tool.run(ctx, args)
    except TimeoutError as exc:
        # Only our own deadline is a timeout; a TimeoutError the tool raised is its error.
        if deadline.expired():
            log.warning("tool %s timed out after %g s", tool.name, timeout_s)
            return ToolOutcome(False, None, f"timed out after {timeout_s:g} s")
        log.warning("tool %s failed", tool.name, exc_info=True)
        return ToolOutcome(False, None, exception_text(exc))
    except Exception as exc:
        # The model gets one line; the operator gets the traceback.
        log.warning("tool %s failed", tool.name, exc_info=True)
        return ToolOutcome(False, None, exception_text(exc))
    try:
        # Round-trip through the codec that stores it, so the result is plain JSON values.
        return ToolOutcome(True, json.loads(jsoncodec.dumps(result)), None)
    except (TypeError, ValueError) as exc:
        return ToolOutcome(False, None, f"The tool's result is not JSON: {exc}")
