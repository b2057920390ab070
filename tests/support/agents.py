"""Servers with named agents: the agents of tests/apps/agents.py, and a config file's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.agent import Threads, ended, feed, read_until, running_agent_server, snapshot
from tests.support.server import ServerProcess
from tests.support.sse import Event

AGENTS_APP = "tests.apps.agents"

# An agent from the config file, beside the app's.
CONFIG = """
[agents.researcher]
instructions = "You look things up."
model = "research-model"
tools = ["sleepy", "slow_count"]
description = "Finds facts."
"""


@contextmanager
def running_agents_server(workdir: Path, api_base: str, *extra: str) -> Iterator[ServerProcess]:
    """A server with the test tools, the agents of AGENTS_APP and CONFIG's, replies from
    `api_base`, and `extra` flags."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "agents.toml"
    config.write_text(CONFIG)
    args = ("--app", AGENTS_APP, "--config", str(config), *extra)
    with running_agent_server(workdir, api_base, *args) as server:
        yield server


async def create_thread(client: httpx.AsyncClient, agent: str | None) -> str:
    """POST /api/threads answered by `agent` (None: the default); returns the thread's id."""
    response = await client.post("/api/threads", json={"agent": agent} if agent else {})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def converse(
    client: httpx.AsyncClient, threads: Threads, thread_id: str, text: str
) -> tuple[str, list[Event]]:
    """Send `text` in the thread and follow its feed to the reply's end: (reply id, events)."""
    async with feed(client, thread_id) as stream:
        await snapshot(stream)
        _, reply_id = await threads.send(thread_id, text)
        return reply_id, await read_until(stream, ended(reply_id))
