"""What a server function receives as `ctx`: the database handle and who is calling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from voicestack.store.db import ReadDB, WriteDB


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made the call: a user id, a display name and a role."""

    id: str
    name: str
    role: str = "user"

    @property
    def is_admin(self) -> bool:
        """True for an administrator."""
        return self.role == "admin"


@dataclass(slots=True)
class QueryCtx:
    """A query's view: a read-only snapshot of the database at one version."""

    db: ReadDB
    user: Caller | None
    version: int


@dataclass(slots=True)
class MutationCtx:
    """A mutation's view: the write transaction, in the mutation's own savepoint."""

    db: WriteDB
    user: Caller | None


@dataclass(slots=True)
class ActionCtx:
    """An action's view: no transaction; it runs queries and mutations by name and may call out."""

    user: Caller | None
    _run_query: Callable[[str, Any, Caller | None], Awaitable[Any]]
    _run_mutation: Callable[[str, Any, Caller | None], Awaitable[Any]]

    async def run_query(self, name: str, args: Any = None) -> Any:
        """Run the query `name` as this caller and return its value."""
        return await self._run_query(name, args, self.user)

    async def run_mutation(self, name: str, args: Any = None) -> Any:
        """Run the mutation `name` as this caller, wait for its commit, and return its value."""
        return await self._run_mutation(name, args, self.user)
