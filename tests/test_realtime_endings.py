"""How a live conversation ends when the server or the thread ends it: SIGTERM lets the sentence
being spoken play out, then saves what was heard and closes with 1001; a member removed from
the thread is closed with 4404, a revoked token with 4401."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from tests.support.agent import StartAgentServer, marker
from tests.support.realtime import conversation, stop_mid_reply
from tests.support.server import REPO, ServerProcess, server_env
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.anyio, pytest.mark.agent_server()]

SENTENCES = [f"Sentence number {n} of the answer is here." for n in range(1, 9)]


async def test_sigterm_ends_a_session_after_the_sentence_being_spoken(
    fake: FakeOpenAI, start_agent_server: StartAgentServer
) -> None:
    mark = marker()
    fake.script({"match": mark, "text": " ".join(SENTENCES), "tokens_per_second": 20})
    server = start_agent_server(fake.api_base, "--drain-s", "10")
    async with server.client() as http:
        thread_id = (await http.post("/api/threads", json={})).json()["id"]

    async with conversation(server, thread_id) as talk:
        stopped = await stop_mid_reply(server, talk, f"Talk {mark}")
    reply_id, closed, ended_after = stopped.reply_id, stopped.closed, stopped.seconds
    assert stopped.exit_code == 0

    spoken = [e for e in talk.events if e["type"] == "reply_audio"]
    assert closed == (1001, "server_shutting_down")
    assert talk.events[-1] == {
        "type": "reply_stopped",
        "messageId": reply_id,
        "status": "interrupted",
    }
    # Every announced sentence was sent whole: 0.06 s of speech per character, at 16 kHz.
    for sentence in spoken:
        frames = talk.audio_after(sentence)
        assert sum(len(f) for f in frames) == pytest.approx(
            len(sentence["text"]) * 0.06 * 32000, abs=64
        )
    # It waited for the last one to play (each lasts 2.4 s), and no longer than the drain.
    assert 0.5 < ended_after < 10
    assert 1 <= len(spoken) < len(SENTENCES)
    rows = server_rows(server, reply_id)
    assert rows == ("interrupted", "server_stopped", " ".join(e["text"] for e in spoken))


def server_rows(server: ServerProcess, message_id: str) -> tuple[str, str, str]:
    """The reply's status, error code and text, read from the stopped server's file."""
    import sqlite3

    with sqlite3.connect(server.db_path) as db:
        row = db.execute(
            "SELECT status, error_code, text FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
    return (row[0], row[1], row[2])


async def invited_guest(server: ServerProcess) -> tuple[str, str, dict[str, str]]:
    """A new thread of the admin's with a new user invited: the thread's id, the guest's token,
    and the membership's arguments (for `threads.leave`)."""
    name = f"guest-{marker()}"
    guest = server.create_token(name)
    async with server.client() as owner:
        thread_id = (await owner.post("/api/threads", json={})).json()["id"]
        membership = {"id": thread_id, "user": name}
        invited = await owner.post("/api/mutation/threads.invite", json={"args": membership})
        invited.raise_for_status()
    return thread_id, guest, membership


async def test_a_member_removed_mid_session_is_closed_with_4404(
    fake: FakeOpenAI, server: ServerProcess
) -> None:
    thread_id, guest, membership = await invited_guest(server)
    async with conversation(server, thread_id, token=guest) as talk:
        await talk.start()
        async with server.client() as owner:
            left = await owner.post("/api/mutation/threads.leave", json={"args": membership})
            left.raise_for_status()
        assert await talk.closing() == (4404, "thread_not_found")
    assert talk.kinds() == ["ready", "error"]
    assert talk.events[-1]["code"] == "thread_not_found"


async def test_a_token_revoked_mid_session_is_closed_with_4401(
    fake: FakeOpenAI, server: ServerProcess
) -> None:
    thread_id, guest, _ = await invited_guest(server)
    async with conversation(server, thread_id, token=guest) as talk:
        await talk.start()
        revoke = [sys.executable, "-m", "voicestack", "token", "revoke", guest]
        await asyncio.to_thread(
            subprocess.run,
            [*revoke, "--db", str(server.db_path)],
            cwd=REPO,
            env=server_env(),
            capture_output=True,
            check=True,
        )
        assert await talk.closing() == (4401, "invalid_token")
    assert talk.kinds() == ["ready", "error"]
    assert talk.events[-1]["code"] == "invalid_token"
