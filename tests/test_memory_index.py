"""The memory index is never silently wrong (issue 17): a server without embeddings, or whose
sqlite-vec library does not load, says it is full-text only and why; a changed model or vector
size stops `serve` with an error that names `voicestack memory reindex`, which re-embeds
everything and resumes after a stop."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anyio
import pytest
from typer.testing import Result

from tests.support.agent import AGENT_ENV, StartAgentServer
from tests.support.api import Api, error_of
from tests.support.cli import invoke
from tests.support.memory import (
    EMBEDDING_MODEL,
    NOTES_APP,
    ids,
    jobs_ended,
    memory_args,
    memory_server,
    search,
)
from tests.support.server import REPO, ServerProcess, running_server
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio


async def test_without_an_embedding_model_memory_is_full_text_only_and_says_so(
    fake: FakeOpenAI, start_agent_server: StartAgentServer
) -> None:
    server = start_agent_server(fake.api_base)  # the tests' environment sets no model
    async with server.client() as http:
        api = Api(http)
        thread_id = (await api.mutation("threads.create", {})).value["id"]
        sent = await api.mutation(
            "messages.send", {"threadId": thread_id, "text": "The quokka smiled at me."}
        )
        hits = await search(http, query="quokka", threadId=thread_id)
        refused = await http.post(
            "/api/query/memory.search", json={"args": {"query": "quokka", "mode": "vector"}}
        )
        health = (await http.get("/healthz?details=1")).json()
        jobs = (await api.query("scheduler.jobs", {"name": "memory.embed"})).value

    assert ids(hits)[0] == sent.value["messageId"]
    assert hits[0]["score"] > 0
    error = error_of(refused, 422, "memory_text_only")
    assert error["message"] == (
        "Memory is full-text only on this server (--embedding-model is empty): search with"
        ' mode "text", or start it with an --embedding-model.'
    )
    assert health["details"]["memory"] == {
        "mode": "fts",
        "embeddingModel": None,
        "dimensions": None,
        "chunks": 0,
        "reason": "--embedding-model is empty",
    }
    assert "memory: full-text only (--embedding-model is empty)" in server.log()
    assert jobs == []
    assert fake.requests("embedding") == []


async def test_a_sqlite_vec_library_that_does_not_load_leaves_memory_full_text_saying_why(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    # An installed sqlite-vec whose library is missing, as in a binary that left it out.
    package = tmp_path / "site" / "sqlite_vec"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        f"def loadable_path():\n    return {str(tmp_path / 'missing' / 'vec0')!r}\n"
    )
    env = {**AGENT_ENV, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path / "site")])}
    args = memory_args(fake.api_base)
    with running_server(tmp_path, NOTES_APP, args, env) as server:
        async with server.client() as http:
            api = Api(http)
            thread_id = (await api.mutation("threads.create", {})).value["id"]
            said = await api.mutation(
                "notes.say", {"threadId": thread_id, "text": "The wombat dug a burrow."}
            )
            hits = await search(http, query="wombat", threadId=thread_id)
            health = (await http.get("/healthz?details=1")).json()
        log = server.log()

    assert ids(hits) == [said.value["id"]]
    memory = health["details"]["memory"]
    assert memory["mode"] == "fts"
    assert memory["reason"].startswith("sqlite-vec's library does not load: ")
    assert "memory: full-text only (sqlite-vec's library does not load: " in log
    assert log.count("memory is full-text only: sqlite-vec's library does not load") == 1
    assert "Traceback" not in log


def refused_serves(
    tmp_path: Path, db: Path, api_base: str, *variants: tuple[str, ...]
) -> list[subprocess.CompletedProcess[str]]:
    """`voicestack serve` on `db` with each variant's extra flags, all at once; each is expected
    to refuse to start."""
    processes = []
    for number, extra in enumerate(variants):
        workdir = tmp_path / f"refused{number}"
        workdir.mkdir()
        server = ServerProcess(
            workdir, NOTES_APP, memory_args(api_base, *extra), AGENT_ENV, db_path=db
        )
        processes.append(
            subprocess.Popen(
                server.command,
                cwd=REPO,
                env=server.environment(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=60)
        results.append(
            subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        )
    return results


async def reindex(db: Path, api_base: str, *extra: str) -> Result:
    """`voicestack memory reindex` on `db` with the test model through `api_base` (in-process,
    on a thread of its own: it runs its own event loop)."""
    args = ["memory", "reindex", "--db", str(db), "--embedding-model", EMBEDDING_MODEL]
    args += ["--openai-base-url", api_base, *extra]
    return await anyio.to_thread.run_sync(invoke, args)


async def test_a_changed_model_or_size_stops_serve_until_reindex_re_embeds_and_resumes(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    with memory_server(tmp_path / "first", fake.api_base) as server:
        async with server.client() as http:
            api = Api(http)
            thread_id = (await api.mutation("threads.create", {})).value["id"]
            said = [
                (await api.mutation("notes.say", {"threadId": thread_id, "text": text})).value["id"]
                for text in ("Otters hold hands.", "Herons stand still.", "Crows remember faces.")
            ]
            await jobs_ended(api, said)
    db = server.db_path

    resized, renamed = refused_serves(
        tmp_path,
        db,
        fake.api_base,
        ("--embedding-dimensions", "256"),
        ("--embedding-model", "other-embed"),
    )
    fake.clear_requests()
    first = await reindex(db, fake.api_base, "--embedding-dimensions", "256", "--limit", "2")
    second = await reindex(db, fake.api_base, "--embedding-dimensions", "256")
    requests = fake.requests("embedding")

    assert resized.returncode == 1, resized.stderr
    assert resized.stderr.splitlines()[-1] == (
        f"error: The memory index holds vectors of '{EMBEDDING_MODEL}' at 1536 dimensions, but"
        f" this server is configured with --embedding-model '{EMBEDDING_MODEL}' at 256"
        " dimensions: searching them together would silently return wrong matches. Run"
        f" `voicestack memory reindex --db {db}` with the new --embedding-* settings to re-embed"
        " everything, or start with the settings the index was made with."
    )
    assert renamed.returncode == 1, renamed.stderr
    assert "configured with --embedding-model 'other-embed'" in renamed.stderr
    assert "voicestack memory reindex" in renamed.stderr
    assert (first.exit_code, first.stdout) == (
        0,
        f"embedded 2 messages and notes (2 chunks) with {EMBEDDING_MODEL} at 256 dimensions;"
        " 0 were done already, 1 remain\n",
    ), first.stderr
    assert "the index held another model or size: it was emptied first" in first.stderr
    assert (second.exit_code, second.stdout) == (
        0,
        f"embedded 1 messages and notes (1 chunks) with {EMBEDDING_MODEL} at 256 dimensions;"
        " 2 were done already, 0 remain\n",
    ), second.stderr
    assert [r["body"]["input"] for r in requests] == [
        ["Otters hold hands.", "Herons stand still."],
        ["Crows remember faces."],
    ]
    assert {r["body"]["dimensions"] for r in requests} == {256}

    # The reindexed database serves at its new size.
    (tmp_path / "again").mkdir()
    after = ServerProcess(
        tmp_path / "again",
        NOTES_APP,
        memory_args(fake.api_base, "--embedding-dimensions", "256"),
        AGENT_ENV,
        db_path=db,
    )
    after.start()
    try:
        async with after.client() as http:
            hits = await search(http, query="crows faces", mode="vector", threadId=thread_id)
            health = (await http.get("/healthz?details=1")).json()
    finally:
        assert after.stop() == 0
    assert ids(hits)[0] == said[2]
    assert health["details"]["memory"]["dimensions"] == 256
    assert health["details"]["memory"]["chunks"] == 3
