"""Several server processes on one database file (DESIGN §2): each learns of the others' commits.

apsw's hooks only see the writing connection, so a process learns of another's commits by
polling `PRAGMA data_version` and reading the `_changes` log.
"""

from __future__ import annotations

import random
import statistics
import time

import anyio
import pytest

from tests.support.api import Api
from tests.support.sse import Watch, watch
from voicestack.store.connection import open_connection

pytestmark = pytest.mark.anyio


async def test_a_commit_by_another_process_reaches_watchers(start_server):
    first = start_server()
    second = start_server(db_path=first.db_path)
    async with (
        first.client() as watching,
        second.client() as writing,
    ):
        async with watch(watching, "/api/watch/items.list") as stream:
            initial = await stream.next()
            added = await Api(writing).mutation("items.add", {"name": "from the other"})
            change = await stream.next(timeout=3.0)
        again = await Api(watching).mutation("items.add", {"name": "and back"})

    assert initial.json["value"] == []
    assert initial.json["version"] < added.version
    assert (change.id, change.json) == (
        str(added.version),
        {"value": [{"id": 1, "name": "from the other"}], "version": added.version},
    )
    assert again.version == added.version + 1


async def _stamp_events(stream: Watch, received: dict[int, float], count: int) -> None:
    # A task of its own, so each event is stamped when it arrives, not when the test looks.
    while len(received) < count:
        event = await stream.next(timeout=10.0)
        received[int(event.id)] = time.time()


async def test_commits_reach_watchers_of_another_process_within_100_ms(start_server):
    count = 20
    first = start_server()
    second = start_server(db_path=first.db_path)
    received: dict[int, float] = {}  # version -> when the watcher on `second` had it
    versions: list[int] = []
    async with first.client() as writing, second.client() as watching:
        api = Api(writing)
        async with watch(watching, "/api/watch/items.list") as stream:
            await stream.next()
            async with anyio.create_task_group() as tg:
                tg.start_soon(_stamp_events, stream, received, count)
                for n in range(count):
                    # The watcher's process polls every 25 ms; a commit made right after an
                    # event arrived would always wait a whole poll, so the phase is varied.
                    await anyio.sleep(random.uniform(0, 0.025))
                    added = await api.mutation("items.add", {"name": f"item {n}"})
                    versions.append(added.version)
                    with anyio.fail_after(3.0):
                        while added.version not in received:  # one commit at a time
                            await anyio.sleep(0.001)

    # Commit and receive times come from the same machine clock: `committed_at` is stamped by
    # the writing process just before its COMMIT.
    conn = open_connection(first.db_path, readonly=True)
    try:
        committed = dict(conn.execute("SELECT version, committed_at FROM _changes").fetchall())
    finally:
        conn.close()
    assert sorted(received) == versions
    latencies_ms = sorted((received[v] - committed[v]) * 1000 for v in versions)
    print(f"commit→receive across processes, ms: {[round(ms, 1) for ms in latencies_ms]}")
    assert latencies_ms[0] > 0
    assert statistics.median(latencies_ms) < 100
