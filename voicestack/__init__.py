"""voicestack: a self-hostable server for real-time AI voice and chat agents.

The public API for apps and plugins, and the only module they import:

- server functions: decorate with `query`, `mutation` or `action`, give them a pydantic argument
  model, take `QueryCtx` / `MutationCtx` / `ActionCtx`, and raise `FunctionError` to refuse a
  call; `ctx.user` is a `Caller`. Apps declare `MIGRATIONS` (SQL strings or `Migration`) and
  recurring runs as `CRONS = [Cron(...)]`;
- tools for the model: `@tool` (or `Tool(...)`), run with a `ToolCtx`;
- agents: `Agent(name, instructions, model=..., tools=[...], handoffs=[...])`, published by an
  app as `AGENTS = [...]`;
- the database handles functions and tools receive: `ReadDB`, `WriteDB`;
- `match_expression`: a safe FTS5 query from a person's or a model's words;
- `remember(db, text, thread_id=..., user=...)`: a note for semantic memory (`memory.search`,
  recall), embedded after the commit when embeddings are on.

Names are imported on first use, so that a command that needs none of them (`voicestack --help`,
`voicestack token list`) starts without loading the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voicestack.agent.agents import Agent
    from voicestack.agent.memory_service import remember
    from voicestack.agent.tools import Tool, ToolCtx, tool
    from voicestack.functions import (
        ActionCtx,
        FunctionError,
        MutationCtx,
        QueryCtx,
        action,
        mutation,
        query,
    )
    from voicestack.functions.cron import Cron
    from voicestack.identity import Caller
    from voicestack.store.db import ReadDB, WriteDB
    from voicestack.store.migrations import Migration
    from voicestack.store.search import match_expression

__version__ = "0.1.0"

# Each public name and the module that defines it.
_EXPORTS = {
    "ActionCtx": "voicestack.functions",
    "Agent": "voicestack.agent.agents",
    "Caller": "voicestack.identity",
    "Cron": "voicestack.functions.cron",
    "FunctionError": "voicestack.functions",
    "Migration": "voicestack.store.migrations",
    "MutationCtx": "voicestack.functions",
    "QueryCtx": "voicestack.functions",
    "ReadDB": "voicestack.store.db",
    "Tool": "voicestack.agent.tools",
    "ToolCtx": "voicestack.agent.tools",
    "WriteDB": "voicestack.store.db",
    "action": "voicestack.functions",
    "match_expression": "voicestack.store.search",
    "mutation": "voicestack.functions",
    "query": "voicestack.functions",
    "remember": "voicestack.agent.memory_service",
    "tool": "voicestack.agent.tools",
}

__all__ = [
    "ActionCtx",
    "Agent",
    "Caller",
    "Cron",
    "FunctionError",
    "Migration",
    "MutationCtx",
    "QueryCtx",
    "ReadDB",
    "Tool",
    "ToolCtx",
    "WriteDB",
    "__version__",
    "action",
    "match_expression",
    "mutation",
    "query",
    "remember",
    "tool",
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
