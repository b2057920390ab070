"""The scheduler across restarts and processes: jobs survive a restart, a job killed while it ran
runs again with its next attempt, cron schedules neither double nor stop, replies are jobs that a
restart resolves deliberately, and of two servers on one file only the leader runs jobs."""

from __future__ import annotations

import signal
from typing import Any

import anyio
import anyio.to_thread
import pytest

from tests.support.agent import (
    StartAgentServer,
    Threads,
    count_deltas,
    ended,
    feed,
    marker,
    read_until,
    snapshot,
    words,
)
from tests.support.api import Api
from tests.support.server import ServerProcess
from tests.test_scheduler import JOBS_APP, job, runs_tagged, schedule, until
from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio


async def restart(server: ServerProcess, sig: int = signal.SIGTERM) -> None:
    """Stop `server` with `sig` and start it again on the same file and port."""
    await anyio.to_thread.run_sync(server.stop, sig)
    await anyio.to_thread.run_sync(server.start)


async def test_a_job_due_after_a_restart_runs_once(start_server) -> None:
    server = start_server(JOBS_APP)
    async with server.client() as client:
        job_id = await schedule(Api(client), "jobs.record", {"tag": "survivor"}, seconds=2)
    await restart(server)
    async with server.client() as client:
        api = Api(client)
        ran = await until(lambda: runs_tagged(api, "survivor"))
        await anyio.sleep(0.3)
        assert [(r["job"], r["attempt"]) for r in await runs_tagged(api, "survivor")] == [
            (job_id, 1)
        ]
        assert ran[0]["at"] >= (await job(api, job_id))["runAt"] - 0.001


async def test_a_job_killed_while_it_ran_runs_again_with_attempt_2(start_server) -> None:
    server = start_server(JOBS_APP)
    async with server.client() as client:
        api = Api(client)
        job_id = await schedule(api, "jobs.slow", {"tag": "slow", "seconds": 30})
        await until(lambda: runs_tagged(api, "slow start 1"))
    await restart(server, signal.SIGKILL)
    async with server.client() as client:
        api = Api(client)
        await until(lambda: runs_tagged(api, "slow end 2"))
        tags = [r["tag"] for r in (await api.query("jobs.runs")).value]
        done = await job(api, job_id)

    assert tags == ["slow start 1", "slow start 2", "slow end 2"]
    assert (done["status"], done["attempts"], done["lastError"]) == (
        "done",
        2,
        "interrupted: the server stopped during attempt 1.",
    )


async def test_a_job_running_at_sigterm_goes_back_to_the_queue(start_server) -> None:
    server = start_server(JOBS_APP, "--drain-s", "0")
    async with server.client() as client:
        api = Api(client)
        job_id = await schedule(api, "jobs.slow", {"tag": "drained", "seconds": 30})
        await until(lambda: runs_tagged(api, "drained start 1"))
    await restart(server)
    async with server.client() as client:
        api = Api(client)
        await until(lambda: runs_tagged(api, "drained end 2"))
        done = await job(api, job_id)
    assert (done["status"], done["attempts"], done["lastError"]) == (
        "done",
        2,
        "interrupted: the server shut down during attempt 1.",
    )


async def cron_jobs(api: Api) -> list[dict[str, Any]]:
    """Every job of the app's per-second cron schedule."""
    jobs = (await api.query("scheduler.jobs", {"limit": 500})).value
    return [j for j in jobs if j["cronKey"] is not None]


async def test_a_cron_schedule_fires_every_second_and_a_restart_does_not_double_it(
    start_server,
) -> None:
    server = start_server("tests.apps.cron_jobs")
    async with server.client() as client:
        api = Api(client)
        await until(lambda: _ticks(api, 2))
    await restart(server)
    async with server.client() as client:
        api = Api(client)
        before = len(await runs_tagged(api, "tick"))
        await until(lambda: _ticks(api, before + 2))
        ticks = await runs_tagged(api, "tick")
        jobs = await cron_jobs(api)

    done = {j["id"]: j for j in jobs if j["status"] == "done"}
    open_runs = [j for j in jobs if j["status"] in ("pending", "running")]
    assert len(open_runs) == 1  # one open run per schedule, whatever restarted
    assert len({j["runAt"] for j in jobs}) == len(jobs)  # no second scheduled twice
    assert all(j["runAt"] == int(j["runAt"]) for j in jobs)  # on the second, as declared
    ran = [t["job"] for t in ticks]
    assert len(set(ran)) == len(ran)  # no run twice
    assert set(ran) <= set(done) | {j["id"] for j in open_runs}
    assert all(t["attempt"] == 1 and t["user"] is None for t in ticks)


async def _ticks(api: Api, count: int) -> bool:
    return len(await runs_tagged(api, "tick")) >= count


async def reply_jobs(api: Api) -> dict[str, dict[str, Any]]:
    """The reply jobs, by the id of their reply."""
    jobs = (await api.query("scheduler.jobs", {"name": "agent.reply", "limit": 500})).value
    return {j["ref"]: j for j in jobs}


async def test_replies_are_jobs_that_a_kill_resolves_deliberately(
    fake: FakeOpenAI, start_agent_server: StartAgentServer
) -> None:
    mark = marker()
    long_question, waiting_question = f"{mark} talk for long", f"{mark} then this"
    fake.script(
        {"match": long_question, "text": words(200), "tokens_per_second": 20},
        {"match": waiting_question, "text": "Second answer."},
    )
    server = start_agent_server(fake.api_base)
    async with server.client() as client:
        threads, api = Threads(client), Api(client)
        thread_id = await threads.create()
        async with feed(client, thread_id) as stream:
            await snapshot(stream)
            _, streaming_id = await threads.send(thread_id, long_question)
            _, pending_id = await threads.send(thread_id, waiting_question)
            await read_until(stream, count_deltas(streaming_id, 3))
        before = await reply_jobs(api)

    await restart(server, signal.SIGKILL)
    async with server.client() as client:
        threads, api = Threads(client), Api(client)
        async with feed(client, thread_id) as stream:
            await read_until(stream, ended(pending_id))
        after = await reply_jobs(api)
        messages = {m["id"]: m for m in (await threads.get(thread_id))["messages"]}

    assert [(before[i]["status"], before[i]["attempts"]) for i in (streaming_id, pending_id)] == [
        ("running", 1),
        ("pending", 0),
    ]
    killed, requeued = after[streaming_id], after[pending_id]
    assert (killed["status"], killed["attempts"], killed["lastError"]) == (
        "interrupted",
        1,
        "server_restarted: The server stopped during this reply.",
    )
    assert messages[streaming_id]["status"] == "interrupted"
    assert messages[streaming_id]["text"]  # the text it streamed is kept
    assert (requeued["status"], requeued["attempts"], requeued["lastError"]) == ("done", 1, None)
    assert messages[pending_id]["text"] == "Second answer."
    assert requeued["claimedBy"] != before[streaming_id]["claimedBy"]  # the new process ran it
    assert requeued["args"] == {"messageId": pending_id, "threadId": thread_id}


async def test_a_cancelled_reply_cancels_its_job(
    fake: FakeOpenAI, start_agent_server: StartAgentServer
) -> None:
    mark = marker()
    fake.script({"match": mark, "text": words(200), "tokens_per_second": 20})
    server = start_agent_server(fake.api_base)
    async with server.client() as client:
        threads, api = Threads(client), Api(client)
        thread_id = await threads.create()
        async with feed(client, thread_id) as stream:
            await snapshot(stream)
            _, reply_id = await threads.send(thread_id, f"{mark} talk")
            await read_until(stream, count_deltas(reply_id, 2))
            await threads.cancel(thread_id)
            await read_until(stream, ended(reply_id))
        cancelled = (await reply_jobs(api))[reply_id]
    assert (cancelled["status"], cancelled["lastError"]) == (
        "cancelled",
        "cancelled: The reply was stopped.",
    )


async def test_of_two_servers_on_one_file_only_the_leader_runs_jobs_until_it_dies(
    start_server,
) -> None:
    first = start_server(JOBS_APP)
    second = start_server(JOBS_APP, db_path=first.db_path)
    assert first.process is not None
    async with second.client() as client:
        api = Api(client)
        ids = [await schedule(api, "jobs.record", {"tag": f"shared {n}"}) for n in range(5)]
        tags = [f"shared {n}" for n in range(5)]
        await until(lambda: _all_ran(api, tags))
        await anyio.sleep(0.3)
        runs = await runs_tagged(api, *tags)
        claimed = {(await job(api, job_id))["claimedBy"] for job_id in ids}

        assert sorted(r["tag"] for r in runs) == tags  # each ran once
        (leader,) = claimed
        assert leader.split(":")[1] == str(first.process.pid)

        # The leader dies: the other process takes over within about a second.
        await anyio.to_thread.run_sync(first.stop, signal.SIGKILL)
        late = await schedule(api, "jobs.record", {"tag": "after the leader"})
        ran = await until(lambda: runs_tagged(api, "after the leader"), timeout=5.0)
        assert second.process is not None
        assert (await job(api, late))["claimedBy"].split(":")[1] == str(second.process.pid)
        assert len(ran) == 1


async def _all_ran(api: Api, tags: list[str]) -> bool:
    return len(await runs_tagged(api, *tags)) >= len(tags)
