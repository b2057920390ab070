"""The arguments of the built-in thread, message and tool-call functions (DESIGN §4)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_TEXT = 32_000


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CreateThreadArgs(_Args):
    """A new thread, answered by `agent` (default: `assistant`)."""

    title: str | None = Field(None, max_length=200)
    agent: str | None = Field(
        None, min_length=1, max_length=100, description="The agent that answers (GET /api/agents)."
    )


class ListThreadsArgs(_Args):
    """A page of threads, newest first."""

    limit: int = Field(50, ge=1, le=200)
    before: str | None = Field(None, description="A thread id: list the threads older than it.")


class ThreadIdArgs(_Args):
    """One thread."""

    id: str = Field(min_length=1, max_length=100)


class ListMessagesArgs(_Args):
    """A page of a thread's messages: the newest `limit` before `before`, in order."""

    thread_id: str = Field(alias="threadId", min_length=1, max_length=100)
    limit: int = Field(50, ge=1, le=500)
    before: int | None = Field(None, description="An `order`: list the messages before it.")


class SendArgs(_Args):
    """A user message that starts a reply."""

    thread_id: str = Field(alias="threadId", min_length=1, max_length=100)
    text: str = Field(min_length=1, max_length=MAX_TEXT)


class InThreadArgs(_Args):
    """A thread, named by its id."""

    thread_id: str = Field(alias="threadId", min_length=1, max_length=100)


class ToolCallIdArgs(_Args):
    """One tool call."""

    id: str = Field(min_length=1, max_length=100)
