"""An app whose mutation writes notes to semantic memory, for tests/test_memory_*.py."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from voicestack import Agent, MutationCtx, mutation, remember


class NoteArgs(BaseModel):
    """A note's text, and the thread it belongs to (none: the caller's own note)."""

    model_config = ConfigDict(populate_by_name=True)

    text: str = Field(min_length=1, max_length=10_000)
    thread_id: str | None = Field(None, alias="threadId")


@mutation("notes.remember")
def remember_note(ctx: MutationCtx, args: NoteArgs) -> dict[str, str]:
    """Save a note to memory as the caller; returns its id."""
    if args.thread_id is not None:
        ctx.threads.messages(args.thread_id, limit=1)  # refuses a thread the caller cannot read
    return {"id": remember(ctx.db, args.text, thread_id=args.thread_id, user=ctx.user)}


class SayArgs(BaseModel):
    """A finished message to post in a thread, starting no reply."""

    model_config = ConfigDict(populate_by_name=True)

    thread_id: str = Field(alias="threadId")
    text: str = Field(min_length=1, max_length=100_000)
    role: str = "assistant"


@mutation("notes.say")
def say(ctx: MutationCtx, args: SayArgs) -> dict[str, str]:
    """Post a finished message (no reply is started); returns its id."""
    return {"id": ctx.threads.post(args.thread_id, args.text, args.role)}


# An agent that recalls one match from its user's other threads, whatever --recall says.
AGENTS = [Agent("librarian", "You find things.", recall=1, description="Recalls one match.")]
