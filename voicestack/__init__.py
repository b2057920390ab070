"""voicestack: a self-hostable server for real-time AI voice and chat agents.

The public API for apps: decorate functions with `query`, `mutation` or `action`, give them a
pydantic argument model, and raise `FunctionError` to refuse a call.
"""

from voicestack.functions import (
    ActionCtx,
    Caller,
    FunctionError,
    MutationCtx,
    QueryCtx,
    action,
    mutation,
    query,
)
from voicestack.store.migrations import Migration

__version__ = "0.1.0"

__all__ = [
    "ActionCtx",
    "Caller",
    "FunctionError",
    "Migration",
    "MutationCtx",
    "QueryCtx",
    "__version__",
    "action",
    "mutation",
    "query",
]
