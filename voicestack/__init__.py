"""voicestack: a self-hostable server for real-time AI voice and chat agents.

The public API for apps: decorate functions with `query`, `mutation` or `action`, give them a
pydantic argument model, and raise `FunctionError` to refuse a call. Mutations and actions schedule
functions with `ctx.scheduler`; an app declares recurring runs as `CRONS = [Cron(...)]`.

Names are imported on first use, so that a command that needs none of them (`voicestack --help`,
`voicestack token list`) starts without loading the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voicestack.functions import (
        ActionCtx,
        FunctionError,
        MutationCtx,
        QueryCtx,
        action,
        mutation,
        query,
    )
    from voicestack.identity import Caller
    from voicestack.scheduler.cron import Cron
    from voicestack.store.migrations import Migration

__version__ = "0.1.0"

# Each public name and the module that defines it.
_EXPORTS = {
    "ActionCtx": "voicestack.functions",
    "Caller": "voicestack.identity",
    "Cron": "voicestack.scheduler.cron",
    "FunctionError": "voicestack.functions",
    "Migration": "voicestack.store.migrations",
    "MutationCtx": "voicestack.functions",
    "QueryCtx": "voicestack.functions",
    "action": "voicestack.functions",
    "mutation": "voicestack.functions",
    "query": "voicestack.functions",
}

__all__ = [
    "ActionCtx",
    "Caller",
    "Cron",
    "FunctionError",
    "Migration",
    "MutationCtx",
    "QueryCtx",
    "__version__",
    "action",
    "mutation",
    "query",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'voicestack' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
