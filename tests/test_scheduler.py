"""The durable scheduler on one server: jobs scheduled by mutations and actions run once each,
with their attempt count; failing ones retry with backoff and keep their error; a job scheduled
by a mutation that rolls back never exists."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest

from tests.support.api import Api, error_of
from tests.support.server import ServerProcess, running_server

pytestmark = pytest.mark.anyio

JOBS_APP = "tests.apps.jobs"


@pytest.fixture(scope="module")
def jobs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One jobs-app server for this module's tests (each uses tags of its own)."""
    with running_server(tmp_path_factory.mktemp("jobs"), JOBS_APP) as server:
        yield server


@pytest.fixture
def server(jobs_server: ServerProcess) -> ServerProcess:
    return jobs_server


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    with anyio.fail_after(timeout):
        while True:
            value = await check()
            if value:
                return value
            await anyio.sleep(0.05)


async def runs_tagged(api: Api, *tags: str) -> list[dict[str, Any]]:
    """The recorded runs with one of `tags`, oldest first."""
    return [r for r in (await api.query("jobs.runs")).value if r["tag"] in tags]


async def job(api: Api, job_id: str) -> dict[str, Any]:
    """One job as `scheduler.jobs` lists it."""
    (found,) = [
        j for j in (await api.query("scheduler.jobs", {"limit": 500})).value if j["id"] == job_id
    ]
    return found


async def schedule(api: Api, name: str, args: Any, **options: Any) -> str:
    """Schedule `name` from the app's `jobs.schedule` mutation; returns the job id."""
    result = await api.mutation("jobs.schedule", {"name": name, "args": args, **options})
    return result.value["jobId"]


async def test_a_job_runs_once_after_its_delay_with_attempt_1(api: Api) -> None:
    job_id = await schedule(api, "jobs.record", {"tag": "once"}, seconds=0.3)
    pending = await job(api, job_id)
    ran = await until(lambda: runs_tagged(api, "once"))
    await anyio.sleep(0.5)  # time for a second run, were there one
    done = await job(api, job_id)

    assert [(r["tag"], r["job"], r["attempt"]) for r in await runs_tagged(api, "once")] == [
        ("once", job_id, 1)
    ]
    assert ran[0]["at"] >= pending["runAt"] - 0.001  # `at` is SQLite's, to the millisecond
    assert ran[0]["user"] == pending["userId"] is not None  # it ran as the user who scheduled it
    assert (pending["kind"], pending["name"], pending["args"], pending["status"]) == (
        "function",
        "jobs.record",
        {"tag": "once"},
        "pending",
    )
    assert (done["status"], done["attempts"], done["maxAttempts"], done["lastError"]) == (
        "done",
        1,
        3,
        None,
    )


async def test_a_job_scheduled_by_a_mutation_that_rolls_back_never_exists(
    api: Api, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        "/api/mutation/jobs.schedule",
        json={"args": {"name": "jobs.record", "args": {"tag": "rolled back"}, "fail_after": True}},
    )
    error_of(response, 400, "changed_my_mind")
    kept = await schedule(api, "jobs.record", {"tag": "kept"})
    await until(lambda: runs_tagged(api, "kept"))
    await anyio.sleep(0.3)

    assert await runs_tagged(api, "rolled back") == []
    jobs = (await api.query("scheduler.jobs", {"name": "jobs.record", "limit": 500})).value
    assert [j["args"]["tag"] for j in jobs if j["args"]["tag"] in ("rolled back", "kept")] == [
        "kept"
    ]
    assert (await job(api, kept))["status"] == "done"


async def test_a_failing_job_retries_with_backoff_and_keeps_its_last_error(api: Api) -> None:
    job_id = await schedule(api, "jobs.fail", {"tag": "broken"})

    async def failed() -> dict[str, Any] | None:
        found = await job(api, job_id)
        return found if found["status"] == "failed" else None

    ended = await until(failed, timeout=15.0)

    assert (ended["attempts"], ended["lastError"]) == (3, "job_broke: broken failed on attempt 3.")
    # Backoff of 1 s then 2 s between the three attempts.
    assert ended["finishedAt"] - ended["createdAt"] >= 3.0
    assert await runs_tagged(api, "broken") == []  # each failed attempt rolled back its writes


async def test_an_action_schedules_and_a_mutation_cancels(api: Api) -> None:
    result = await api.action(
        "jobs.schedule_from_action", {"name": "jobs.record", "args": {"tag": "from action"}}
    )
    later = await schedule(api, "jobs.record", {"tag": "cancelled"}, seconds=60)
    cancelled = await api.mutation("jobs.cancel", {"job_id": later})
    again = await api.mutation("jobs.cancel", {"job_id": later})
    await until(lambda: runs_tagged(api, "from action"))

    assert (cancelled.value, again.value) == (True, False)
    assert (await job(api, later))["status"] == "cancelled"
    assert (await job(api, result.value["jobId"]))["status"] == "done"


async def test_run_at_a_past_time_runs_at_once(api: Api) -> None:
    await schedule(api, "jobs.record", {"tag": "overdue"}, at=1.0)
    runs = await until(lambda: runs_tagged(api, "overdue"), timeout=3.0)
    assert [r["attempt"] for r in runs] == [1]


@pytest.mark.parametrize(
    ("name", "args", "code"),
    [
        ("jobs.nothing", {"tag": "x"}, "unknown_job_function"),
        ("jobs.runs", None, "unknown_job_function"),  # a query is not a job
        ("jobs.record", {"tag": ""}, "invalid_job_args"),
        ("jobs.record", {"label": "x"}, "invalid_job_args"),
    ],
)
async def test_scheduling_refuses_an_unknown_function_or_args_that_do_not_fit(
    client: httpx.AsyncClient, name: str, args: Any, code: str
) -> None:
    response = await client.post(
        "/api/mutation/jobs.schedule", json={"args": {"name": name, "args": args}}
    )
    error = error_of(response, 400, code)
    assert name in error["message"]


async def test_a_job_that_outlives_its_time_limit_fails_that_attempt(start_server) -> None:
    server = start_server(JOBS_APP, "--job-timeout-s", "1")
    async with server.client() as http:
        api = Api(http)
        job_id = await schedule(api, "jobs.slow", {"tag": "hung", "seconds": 30})
        await until(lambda: runs_tagged(api, "hung end 2"), timeout=15)
        done = await job(api, job_id)
        tags = [
            r["tag"]
            for r in await runs_tagged(
                api, "hung start 1", "hung end 1", "hung start 2", "hung end 2"
            )
        ]
    assert tags == ["hung start 1", "hung start 2", "hung end 2"]  # attempt 1 was cut off
    assert (done["status"], done["attempts"]) == ("done", 2)
