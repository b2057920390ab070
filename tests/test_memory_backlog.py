"""What was said while a server had no embedding model is embedded once it has one (issue 17): a
start with embeddings queues a backfill that embeds the backlog in the background, and a
backfill stopped by a failing provider goes on at the next start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.agent import AGENT_ENV, agent_args
from tests.support.api import Api
from tests.support.memory import NOTES_APP, ids, memory_args, search
from tests.support.server import running_server
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

SAID = [
    "The orchard's pear trees were pruned in February.",
    "Our sailboat needs a new jib before the regatta.",
    "The violin was restrung with gut strings.",
]


async def text_only_period(
    workdir: Path, api_base: str, more_notes: int = 0, blank_notes: int = 0
) -> tuple[str, list[str], str]:
    """Messages and notes written while the server embeds nothing (first `blank_notes`
    messages of only whitespace); (thread, messages, the first note)."""
    with running_server(workdir, NOTES_APP, agent_args(api_base), AGENT_ENV) as server:
        async with server.client() as http:
            api = Api(http)
            if blank_notes:
                blank_thread = (await api.mutation("threads.create", {})).value["id"]
            for _ in range(blank_notes):  # a reply of only whitespace, as some models send
                await api.mutation("notes.say", {"threadId": blank_thread, "text": " \n\n "})
            refused = await http.post(
                "/api/mutation/notes.remember", json={"args": {"text": " \n "}}
            )
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["code"] == "invalid_note"
            thread_id = (await api.mutation("threads.create", {})).value["id"]
            messages = [
                (await api.mutation("notes.say", {"threadId": thread_id, "text": text})).value["id"]
                for text in SAID
            ]
            note = (
                await api.mutation("notes.remember", {"text": "The kiln fires at 1200 degrees."})
            ).value["id"]
            for n in range(more_notes):
                await api.mutation("notes.remember", {"text": f"Reminder number {n} of many."})
            health = (await http.get("/healthz?details=1")).json()
    assert health["details"]["memory"]["chunks"] == 0
    return thread_id, messages, note


async def backfills(api: Api, statuses: tuple[str, ...], timeout: float = 30.0) -> list[Any]:
    """Wait until the newest backfill run has one of `statuses`; every run, newest first."""
    with anyio.fail_after(timeout):
        while True:
            runs = (await api.query("scheduler.jobs", {"name": "memory.backfill"})).value
            if runs and runs[0]["status"] in statuses:
                return list(runs)
            await anyio.sleep(0.1)


async def test_messages_and_notes_of_a_text_only_period_are_embedded_once_a_model_is_set(
    tmp_path: Path,
) -> None:
    with FakeOpenAI() as fake:
        # More than one run's BATCH (32): the first run queues the second.
        thread_id, messages, note = await text_only_period(tmp_path, fake.api_base, 33)
        with running_server(tmp_path, NOTES_APP, memory_args(fake.api_base), AGENT_ENV) as server:
            async with server.client() as http:
                api = Api(http)
                runs = await backfills(api, ("done", "failed"))
                health = (await http.get("/healthz?details=1")).json()
                found = await search(
                    http, query="sailboat jib", mode="vector", threadId=thread_id, limit=1
                )
                kiln = await search(http, query="kiln firing", mode="vector", limit=1)
                embed_jobs = (await api.query("scheduler.jobs", {"name": "memory.embed"})).value
        requests = fake.requests("embedding")

    assert [(run["status"], run["attempts"]) for run in runs] == [("done", 1), ("done", 1)]
    assert health["details"]["memory"]["chunks"] == len(messages) + 1 + 33
    assert ids(found) == [messages[1]]
    assert ids(kiln) == [note]
    assert embed_jobs == []  # the backlog is the backfill's, not a job per message
    # One request per run (then one per search query).
    assert [len(r["body"]["input"]) for r in requests][:2] == [32, len(messages) + 1 + 33 - 32]


async def test_a_backfill_stopped_by_a_failing_provider_goes_on_at_the_next_start(
    tmp_path: Path,
) -> None:
    with FakeOpenAI() as fake:
        _, messages, _ = await text_only_period(tmp_path, fake.api_base)
        fake.script({"kind": "embedding", "error": {"status": 500}, "times": None})
        with running_server(tmp_path, NOTES_APP, memory_args(fake.api_base), AGENT_ENV) as server:
            async with server.client() as http:
                failed = await backfills(Api(http), ("failed",))
                first = (await http.get("/healthz?details=1")).json()
        fake.reset()
        with running_server(tmp_path, NOTES_APP, memory_args(fake.api_base), AGENT_ENV) as server:
            async with server.client() as http:
                runs = await backfills(Api(http), ("done",))
                second = (await http.get("/healthz?details=1")).json()

    assert [(run["status"], run["attempts"]) for run in failed] == [("failed", 3)]
    assert failed[0]["lastError"].startswith("provider_error: The embedding provider at")
    assert first["details"]["memory"]["chunks"] == 0
    assert [run["status"] for run in runs] == ["done", "failed"]
    assert second["details"]["memory"]["chunks"] == len(messages) + 1


async def test_sources_with_nothing_to_embed_never_hold_the_backfill_up(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        # Oldest first: more blank notes than a run takes, then what is worth remembering.
        _, messages, _ = await text_only_period(tmp_path, fake.api_base, 0, blank_notes=40)
        with running_server(tmp_path, NOTES_APP, memory_args(fake.api_base), AGENT_ENV) as server:
            async with server.client() as http:
                runs = await backfills(Api(http), ("done", "failed"))
                health = (await http.get("/healthz?details=1")).json()
    assert [run["status"] for run in runs] == ["done"]
    assert health["details"]["memory"]["chunks"] == len(messages) + 1
