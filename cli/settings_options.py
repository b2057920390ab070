"""Command-line options generated from the Settings model, so flags and settings never drift.

Every Settings field but the config file's tables becomes `--field-name` (unset by default, so
the config file and the environment still apply), with the field's description as its help.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, SecretStr

from voicestack.config import Settings

# Fields whose flag is spelled differently from the field name.
FLAG_NAMES = {
    "apps": "--app",
    "cors_origins": "--cors-origin",
    "no_autocheckpoint": "--no-autocheckpoint",
}
# Fields whose flag takes a word besides their type's values, which Settings resolves.
FLAG_TYPES: dict[str, Any] = {"workers": str}  # a number, or `auto`


def _option_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return _option_type(args[0])
    if origin is list:
        return types.GenericAlias(list, (_option_type(args[0]),))
    if origin is typing.Literal:
        return str
    if annotation is SecretStr:
        return str
    if annotation in (str, int, float, bool, Path):
        return annotation
    raise TypeError(f"No command-line type for {annotation!r}")


def settings_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per Settings field, annotated for Typer."""
    parameters = []
    for name, field in Settings.model_fields.items():
        if typing.get_origin(field.annotation) is dict or (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            continue  # tables ([agents.NAME], [auth]) are set in the config file, not by flags
        kind = FLAG_TYPES.get(name) or _option_type(field.annotation)
        flag = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
        help_text = field.description or ""
        if typing.get_origin(field.annotation) is typing.Literal:
            help_text += f" One of: {', '.join(typing.get_args(field.annotation))}."
        default = field.get_default(call_default_factory=True)
        if default not in (None, [], False):
            help_text += f" Default: {default}."
        option = typer.Option(flag, help=help_text, show_default=False)
        parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[kind | None, option],
            )
        )
    return parameters


def with_settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give `command(**kwargs)` the Settings flags after its own parameters."""
    own = list(inspect.signature(command).parameters.values())
    own = [p for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = inspect.Signature([*own, *settings_parameters()])  # type: ignore[attr-defined]
    return command
