"""A reply cut short is remembered by its final text (issue 17): one stopped by a cancel, and one
cut by a barge-in after its text had completed (and been embedded uncut), each end with one set
of chunks holding the text the thread keeps."""

from __future__ import annotations

from pathlib import Path

import anyio
import apsw
import pytest

from tests.support.agent import Threads, marker
from tests.support.api import Api
from tests.support.memory import EMBEDDING_MODEL, embed_jobs, search
from tests.support.realtime import ask, conversation, silence, spoken_pcm
from tests.support.server import ServerProcess
from tests.support.voice import requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, pytest.mark.agent_server("--embedding-model", EMBEDDING_MODEL)]

SENTENCES = [
    "The lighthouse keeper painted the railing green.",
    "Then he fed the gulls on the pier.",
    "At dusk he lit the great lamp.",
    "Ships passed safely all night long.",
]


def chunk_texts(db_path: Path, message_id: str) -> list[str]:
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute(
            "SELECT text FROM memory_chunks WHERE message_id = ? ORDER BY seq", (message_id,)
        )
        return [text for (text,) in rows]
    finally:
        conn.close()


async def settled(api: Api, message_id: str, timeout: float = 20.0) -> list[str]:
    """Wait until no embedding job of the message is pending or running; their statuses."""
    with anyio.fail_after(timeout):
        while True:
            jobs = [
                job
                for job in (await api.query("scheduler.jobs", {"name": "memory.embed"})).value
                if job["ref"] == message_id
            ]
            if jobs and all(job["status"] in ("done", "failed") for job in jobs):
                return [job["status"] for job in jobs]
            await anyio.sleep(0.1)


async def test_a_cancelled_reply_is_embedded_with_the_text_it_kept(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess
) -> None:
    mark = marker()
    answer = " ".join(SENTENCES * 4)
    fake.script({"match": mark, "text": answer, "tokens_per_second": 20})
    thread_id = await threads.create()
    _, reply_id = await threads.send(thread_id, f"{mark} tell me about the lighthouse")
    async with server.client() as http:
        api = Api(http)
        with anyio.fail_after(10):
            while len((await threads.get(thread_id))["messages"][1]["text"]) < 40:
                await anyio.sleep(0.05)
        await threads.cancel(thread_id)
        statuses = await settled(api, reply_id)
        hits = await search(http, query="lighthouse keeper", mode="vector", threadId=thread_id)

    saved = (await threads.get(thread_id))["messages"][1]
    assert saved["status"] == "interrupted"
    assert answer.startswith(saved["text"])
    assert saved["text"] != answer
    assert chunk_texts(server.db_path, reply_id) == [saved["text"].strip()]
    assert statuses == ["done"]
    assert reply_id in [hit["id"] for hit in hits]


@requires_espeak
async def test_a_reply_cut_by_barge_in_after_it_completed_is_re_embedded_as_heard(
    fake: FakeOpenAI, threads: Threads, server: ServerProcess, tmp_path: Path
) -> None:
    first, second = marker(), marker()
    answer = " ".join(SENTENCES)
    fake.script(
        {"kind": "transcription", "transcript": f"Tell me a story {first}"},
        # Fast: the text completes (and is embedded whole) while its speech still plays.
        {"match": first, "text": answer},
        {"kind": "transcription", "transcript": f"Stop, tell me about Rome {second}"},
        {"match": second, "text": "Rome is old."},
    )
    question = spoken_pcm(tmp_path, "Tell me a story.")
    interruption = spoken_pcm(tmp_path, "Stop, tell me about Rome instead.")
    thread_id = await threads.create()

    async with server.client() as http:
        api = Api(http)
        async with conversation(server, thread_id) as talk:
            reply_id = await ask(talk, question)
            with anyio.fail_after(20):
                while (await embed_jobs(api, [reply_id])).get(reply_id, {}).get("status") != (
                    "done"
                ):
                    await anyio.sleep(0.05)
            whole = chunk_texts(server.db_path, reply_id)
            await talk.wait_for(lambda e: e["type"] == "reply_audio" and e["seq"] == 2)
            await talk.send_json({"type": "played", "messageId": reply_id, "ms": 3000})
            mark = len(talk.events)
            await talk.say(interruption + silence(1000))
            await talk.wait_for(
                lambda e: e["type"] == "reply_stopped" and e["messageId"] != reply_id, after=mark
            )
        statuses = await settled(api, reply_id)

    saved = (await threads.get(thread_id))["messages"][1]
    assert saved["status"] == "interrupted"
    assert answer.startswith(saved["text"])
    assert saved["text"] != answer
    assert whole == [answer]
    assert chunk_texts(server.db_path, reply_id) == [saved["text"].strip()]
    assert statuses == ["done", "done"]
