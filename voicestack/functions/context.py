"""What a server function receives as `ctx`: the database handle and who is calling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voicestack.functions.thread_api import (
    NO_THREADS,
    ActionThreads,
    MutationThreads,
    QueryThreads,
)
from voicestack.identity import Caller
from voicestack.store.db import ReadDB, WriteDB

if TYPE_CHECKING:
    from voicestack.scheduler.context import ActionScheduler, MutationScheduler
    from voicestack.scheduler.jobs import JobRun


QueryThreadsFactory = Callable[[ReadDB, Caller | None], QueryThreads]
# Queries also run in the reactive hub, which builds their ctx and knows nothing of agents. A
# query's `ctx.threads` needs only its snapshot and caller, so one binding per process serves
# every Runtime in it (the runtime sets it: `use_query_threads`).
_query_threads: QueryThreadsFactory | None = None


def use_query_threads(factory: QueryThreadsFactory) -> None:
    """Make `factory(db, user)` the `ctx.threads` of every query."""
    global _query_threads
    _query_threads = factory


@dataclass(slots=True)
class QueryCtx:
    """A query's view: a read-only snapshot of the database at one version.

    `ctx.threads` reads the agent's threads in the same snapshot, as this caller.
    """

    db: ReadDB
    user: Caller | None
    version: int

    @property
    def threads(self) -> QueryThreads:
        """The agent's threads as this caller sees them, in this query's snapshot."""
        if _query_threads is None:
            threads: QueryThreads = NO_THREADS
            return threads
        return _query_threads(self.db, self.user)


class _NoScheduler:
    """`ctx.scheduler` of a context made outside a Runtime: scheduling is refused."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("This ctx has no scheduler: only a running server schedules jobs.")


NO_SCHEDULER: Any = _NoScheduler()


@dataclass(slots=True)
class MutationCtx:
    """A mutation's view: the write transaction, in the mutation's own savepoint.

    `ctx.scheduler` schedules jobs in this same transaction; `ctx.job` is the job run this call
    is (with its `attempt`, 1 first), or None when a client called it; `ctx.threads` creates
    threads and sends messages in this same transaction, as this caller.
    """

    db: WriteDB
    user: Caller | None
    scheduler: MutationScheduler = NO_SCHEDULER
    job: JobRun | None = None
    threads: MutationThreads = NO_THREADS


@dataclass(slots=True)
class ActionCtx:
    """An action's view: no transaction; it runs queries and mutations by name and may call out.

    `ctx.scheduler` schedules jobs (each committed at once); `ctx.job` is the job run this call
    is (with its `attempt`, 1 first), or None when a client called it; `ctx.threads` uses the
    agent's threads as this caller, and `await ctx.threads.generate(...)` waits for a reply.
    """

    user: Caller | None
    _run_query: Callable[[str, Any, Caller | None], Awaitable[Any]]
    _run_mutation: Callable[[str, Any, Caller | None], Awaitable[Any]]
    scheduler: ActionScheduler = NO_SCHEDULER
    job: JobRun | None = None
    threads: ActionThreads = NO_THREADS

    async def run_query(self, name: str, args: Any = None) -> Any:
        """Run the query `name` as this caller and return its value."""
        return await self._run_query(name, args, self.user)

    async def run_mutation(self, name: str, args: Any = None) -> Any:
        """Run the mutation `name` as this caller, wait for its commit, and return its value."""
        return await self._run_mutation(name, args, self.user)
