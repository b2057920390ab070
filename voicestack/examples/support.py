"""A support desk that hands billing questions to a billing agent, and functions that use it.

voicestack serve --app voicestack.examples.support
auth="Authorization: Bearer $(cat voicestack.db.token)"
curl -H "$auth" http://127.0.0.1:8000/api/agents
curl -H "$auth" -X POST http://127.0.0.1:8000/api/mutation/tickets.open \
    -d '{"args": {"text": "Where is my refund?"}}'
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from voicestack import ActionCtx, Agent, MutationCtx, action, mutation

AGENTS = [
    Agent(
        "support",
        "You are the support desk of Example Co. Hand questions about money to billing.",
        # No `tools`: every loaded tool; a list such as ["search_notes"] offers only those.
        handoffs=["billing"],  # gives the model a tool `transfer_to_billing`
        description="Any question about Example Co.",
    ),
    Agent(
        "billing",
        "You answer questions about invoices, refunds and payments.",
        model="gpt-4o",  # unset fields take the serve flags'
        tools=[],
        voice="verse",
        description="Questions about invoices, refunds and payments.",
    ),
]

MIGRATIONS = [
    # A ticket is a support thread opened by `tickets.open`.
    """
    CREATE TABLE tickets (
        id INTEGER PRIMARY KEY,
        thread_id TEXT NOT NULL,
        opened_at REAL NOT NULL DEFAULT (unixepoch())
    )
    """,
]


class Question(BaseModel):
    """A question for the support desk."""

    text: str = Field(min_length=1, max_length=4000)


@action("support.ask")
async def ask_support(ctx: ActionCtx, args: Question) -> dict[str, Any]:
    """Ask support in a new thread and wait for the answer."""
    thread_id = await ctx.threads.create(title="support", agent="support")
    answer = await ctx.threads.generate(thread_id, args.text)  # waits for the reply
    return {"threadId": thread_id, "answer": answer}


@mutation("tickets.open")
def open_ticket(ctx: MutationCtx, args: Question) -> dict[str, Any]:
    """Open a ticket: a support thread with the question sent, in this transaction."""
    thread_id = ctx.threads.create(title="ticket", agent="support")
    sent = ctx.threads.send(thread_id, args.text)  # {"messageId", "replyId"}
    ctx.db.execute("INSERT INTO tickets(thread_id) VALUES (?)", (thread_id,))
    return {"threadId": thread_id, **sent}
