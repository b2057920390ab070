"""The agents example app, as the README shows it: its agents are listed, and its mutation opens
a support thread through `ctx.threads` and records the ticket in the app's own table."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from tests.support.api import Api
from voicestack.config import Settings

pytestmark = pytest.mark.anyio


async def test_the_support_example_lists_its_agents_and_opens_a_ticket(start_server):
    server = start_server("voicestack.examples.support")
    async with server.client() as client:
        api = Api(client)
        agents = (await api.query("agents.list")).value
        opened = (await api.mutation("tickets.open", {"text": "Where is my refund?"})).value
        thread = (await client.get(f"/api/threads/{opened['threadId']}")).json()

    voice = Settings.model_fields["voice"].default
    model = Settings.model_fields["model"].default
    assert [agent["name"] for agent in agents] == ["assistant", "support", "billing"]
    assert agents[1:] == [
        {
            "name": "support",
            "description": "Any question about Example Co.",
            "model": model,
            "tools": None,
            "voice": voice,
            "handoffs": ["billing"],
        },
        {
            "name": "billing",
            "description": "Questions about invoices, refunds and payments.",
            "model": "gpt-4o",
            "tools": [],
            "voice": "verse",
            "handoffs": [],
        },
    ]
    assert sorted(opened) == ["messageId", "replyId", "threadId"]
    assert (thread["title"], thread["agent"]) == ("ticket", "support")
    assert [(m["id"], m["role"], m["text"]) for m in thread["messages"][:1]] == [
        (opened["messageId"], "user", "Where is my refund?")
    ]
    assert (thread["messages"][1]["id"], thread["messages"][1]["agent"]) == (
        opened["replyId"],
        "support",
    )
    assert tickets(server.db_path) == [(opened["threadId"],)]


def tickets(path: Path) -> list[tuple[str, ...]]:
    """The app's ticket rows, read straight from the server's database file."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(5000)
    try:
        return list(conn.execute("SELECT thread_id FROM tickets"))
    finally:
        conn.close()
