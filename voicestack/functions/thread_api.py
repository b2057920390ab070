"""`ctx.threads`: the agent's threads as server functions use them (DESIGN §8).

The functions layer sits below the agent, so it only names what `ctx.threads` offers; the
runtime hands every ctx the agent layer's implementation (voicestack/agent/app_threads.py). Each
call acts as `ctx.user` and sees only the threads that user may see.
"""

from __future__ import annotations

from typing import Any, Protocol


class QueryThreads(Protocol):
    """A query's `ctx.threads`: reads in the query's snapshot."""

    def messages(self, thread_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The thread's newest `limit` messages (all when None), in order, as the API shows
        them; `thread_not_found` when the caller may not see it."""
        ...


class MutationThreads(QueryThreads, Protocol):
    """A mutation's `ctx.threads`: writes in the mutation's transaction, so a rollback leaves
    no thread, no message and no reply behind."""

    def create(self, title: str | None = None, agent: str | None = None) -> str:
        """Create a thread owned by the caller, answered by `agent`; returns its id."""
        ...

    def send(self, thread_id: str, text: str) -> dict[str, str]:
        """Save the caller's message and queue the reply to it, which starts once the mutation
        commits; returns `{"messageId", "replyId"}`."""
        ...

    def post(self, thread_id: str, text: str, role: str = "assistant") -> str:
        """Save a finished message (assistant, user or system) that starts no reply; returns its
        id. An assistant message stops the model's unfinished replies, as `messages.post` does."""
        ...


class ActionThreads(Protocol):
    """An action's `ctx.threads`: each write commits on its own."""

    async def create(self, title: str | None = None, agent: str | None = None) -> str:
        """Create a thread owned by the caller, answered by `agent`; returns its id."""
        ...

    async def send(self, thread_id: str, text: str) -> dict[str, str]:
        """Save the caller's message and start the reply; returns `{"messageId", "replyId"}`."""
        ...

    async def post(self, thread_id: str, text: str, role: str = "assistant") -> str:
        """Save a finished message that starts no reply; returns its id."""
        ...

    async def messages(self, thread_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The thread's newest `limit` messages (all when None), in order."""
        ...

    async def generate(self, thread_id: str, text: str) -> str:
        """Send `text` and wait for the reply to end; its text, or its error raised as a
        FunctionError with the reply's error code."""
        ...


class _NoThreads:
    """`ctx.threads` of a context made outside a Runtime: there are no threads to use."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("This ctx has no threads: only a running server has agent threads.")


NO_THREADS: Any = _NoThreads()
