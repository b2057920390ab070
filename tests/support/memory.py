"""Semantic memory from a client's side: servers that embed, waiting for embedding jobs, search."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx

from tests.support.agent import AGENT_ENV, agent_args
from tests.support.api import Api
from tests.support.server import ServerProcess, running_server

NOTES_APP = "tests.apps.memory_notes"
EMBEDDING_MODEL = "text-embedding-3-small"


def memory_args(api_base: str | None, *extra: str) -> list[str]:
    """`serve` flags for an agent server on `api_base` that embeds with EMBEDDING_MODEL."""
    return agent_args(api_base, "--embedding-model", EMBEDDING_MODEL, *extra)


@contextmanager
def memory_server(workdir: Path, api_base: str | None, *extra: str) -> Iterator[ServerProcess]:
    """A running server of the notes app whose messages are embedded through `api_base`."""
    workdir.mkdir(parents=True, exist_ok=True)
    with running_server(workdir, NOTES_APP, memory_args(api_base, *extra), AGENT_ENV) as server:
        yield server


async def embed_jobs(api: Api, refs: list[str]) -> dict[str, dict[str, Any]]:
    """The `memory.embed` jobs of these messages or notes, by ref."""
    jobs = (await api.query("scheduler.jobs", {"name": "memory.embed", "limit": 500})).value
    return {job["ref"]: job for job in jobs if job["ref"] in refs}


async def jobs_ended(
    api: Api, refs: list[str], statuses: tuple[str, ...] = ("done",), timeout: float = 20.0
) -> dict[str, dict[str, Any]]:
    """Wait until every ref's embedding job has one of `statuses`; returns the jobs by ref."""
    jobs: dict[str, dict[str, Any]] = {}
    with anyio.fail_after(timeout):
        while True:
            jobs = await embed_jobs(api, refs)
            if len(jobs) == len(refs) and all(j["status"] in statuses for j in jobs.values()):
                return jobs
            await anyio.sleep(0.1)


async def search(http: httpx.AsyncClient, **args: Any) -> list[dict[str, Any]]:
    """The hits of `memory.search` with `args` (200 asserted)."""
    answer = await http.post("/api/query/memory.search", json={"args": args})
    assert answer.status_code == 200, answer.text
    hits: list[dict[str, Any]] = answer.json()["value"]
    return hits


def ids(hits: list[dict[str, Any]]) -> list[str]:
    """The hits' ids, in order."""
    return [hit["id"] for hit in hits]
