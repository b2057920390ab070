"""voicestack: a self-hostable server for real-time AI voice and chat agents.

The public API for apps: decorate functions with `query`, `mutation` or `action`, give them a
pydantic argument model, and raise `FunctionError` to refuse a call. Mutations and actions schedule
functions with `ctx.scheduler`; an app declares recurring runs as `CRONS = [Cron(...)]`.
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
from voicestack.scheduler_cron import Cron
from voicestack.store.migrations import Migration

__version__ = "0.1.0"

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
