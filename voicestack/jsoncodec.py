"""JSON as voicestack writes it: compact UTF-8 bytes, strict (no NaN), pydantic models included."""

from __future__ import annotations

import datetime
import json
from typing import Any

from pydantic import BaseModel


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        raise TypeError("bytes are not JSON: return text or base64")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """`value` as compact JSON bytes; raises TypeError/ValueError for what JSON cannot hold."""
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_default
    ).encode()
