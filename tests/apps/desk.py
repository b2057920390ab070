"""A help desk that uses the agent from its own functions through `ctx.threads`, for the tests
of tests/test_ctx_threads.py: a mutation that opens a thread (and may then fail), a query and
an action that read it, and actions that ask the model and wait for its answer.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from voicestack import ActionCtx, FunctionError, MutationCtx, QueryCtx, action, mutation, query


class OpenArgs(BaseModel):
    """A new thread with a first question; `fail` raises after both are saved."""

    title: str | None = None
    agent: str | None = None
    text: str
    fail: bool = False


class InThread(BaseModel):
    """A thread, and at most `limit` of its messages."""

    thread_id: str = Field(alias="threadId")
    limit: int | None = None


class SayArgs(BaseModel):
    """Text for a thread; `role` for a posted message."""

    thread_id: str = Field(alias="threadId")
    text: str
    role: str = "assistant"


class AskArgs(BaseModel):
    """A question for a new thread."""

    text: str


@mutation("desk.open")
def open_ticket(ctx: MutationCtx, args: OpenArgs) -> dict[str, str]:
    """Create a thread and send its first message, in this mutation's transaction."""
    thread_id = ctx.threads.create(title=args.title, agent=args.agent)
    sent = ctx.threads.send(thread_id, args.text)
    if args.fail:
        raise FunctionError("desk_closed", "The desk is closed.", 409)
    return {"threadId": thread_id, **sent}


@mutation("desk.send")
def send(ctx: MutationCtx, args: SayArgs) -> dict[str, str]:
    """Send a message to an existing thread."""
    return ctx.threads.send(args.thread_id, args.text)


@mutation("desk.post")
def post(ctx: MutationCtx, args: SayArgs) -> dict[str, str]:
    """Post a finished message as `role`."""
    return {"messageId": ctx.threads.post(args.thread_id, args.text, role=args.role)}


@query("desk.messages")
def messages(ctx: QueryCtx, args: InThread) -> list[dict[str, Any]]:
    """The thread's messages."""
    return ctx.threads.messages(args.thread_id, limit=args.limit)


@action("desk.history")
async def history(ctx: ActionCtx, args: InThread) -> list[dict[str, Any]]:
    """The thread's messages, read from an action."""
    return await ctx.threads.messages(args.thread_id, limit=args.limit)


@action("desk.ask")
async def ask(ctx: ActionCtx, args: AskArgs) -> dict[str, str]:
    """Open a thread, ask the model, and return its answer."""
    thread_id = await ctx.threads.create(title="desk")
    answer = await ctx.threads.generate(thread_id, args.text)
    return {"threadId": thread_id, "answer": answer}


@action("desk.generate")
async def generate(ctx: ActionCtx, args: SayArgs) -> str:
    """Ask the model in an existing thread and return its answer."""
    return await ctx.threads.generate(args.thread_id, args.text)


@action("desk.post_later")
async def post_later(ctx: ActionCtx, args: SayArgs) -> dict[str, str]:
    """Post a finished message from an action."""
    return {"messageId": await ctx.threads.post(args.thread_id, args.text, role=args.role)}
