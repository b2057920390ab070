"""The server-function model: named queries, mutations and actions with validated arguments."""

from voicestack.functions.context import ActionCtx, MutationCtx, QueryCtx
from voicestack.functions.errors import FunctionError
from voicestack.functions.registry import Registry, ServerFunction, action, mutation, query
from voicestack.identity import Caller

__all__ = [
    "ActionCtx",
    "Caller",
    "FunctionError",
    "MutationCtx",
    "QueryCtx",
    "Registry",
    "ServerFunction",
    "action",
    "mutation",
    "query",
]
