"""What calling a server function by name gives back: its result as the HTTP API answers it, or
the error for a name that no function (of that kind) has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voicestack.echo import echoed
from voicestack.functions.errors import FunctionError
from voicestack.functions.registry import Kind


@dataclass(frozen=True, slots=True)
class CallResult:
    """A function's value (also as JSON) and the database version it reflects."""

    value: Any
    version: int
    value_json: bytes

    def response_body(self) -> bytes:
        """`{"value": ..., "version": N}` as the HTTP API answers a call."""
        return b'{"value":%s,"version":%d}' % (self.value_json, self.version)


class UnknownFunction(FunctionError):
    """No function of that name (and kind) is registered."""

    def __init__(self, name: str, kind: Kind | None = None, actual: Kind | None = None) -> None:
        if actual is not None and kind is not None:
            super().__init__(
                "wrong_function_kind",
                f"{echoed(name)!r} is a {actual}, not a {kind}: call it at /api/{actual}/{name}.",
                400,
            )
        else:
            super().__init__(
                "unknown_function",
                f"No function is named {echoed(name)!r}; GET /api/functions lists them.",
                404,
            )
