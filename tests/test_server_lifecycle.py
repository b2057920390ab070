"""The server process over its life: restarts keep rows and versions; SIGTERM ends streams."""

from __future__ import annotations

import json
import signal
import time

import anyio
import anyio.to_thread
import pytest

from tests.support.api import Api
from tests.support.sse import watch

pytestmark = pytest.mark.anyio

BLOB = 5 * 1024 * 1024  # more than SQLite's default autocheckpoint of 1000 pages of 4 KiB


async def test_rows_and_version_survive_a_restart(server, client, api):
    await api.mutation("items.add", {"name": "pen"})
    last = await api.mutation("items.add", {"name": "ink"})

    assert server.stop() == 0
    server.restart()

    listed = await api.query("items.list")
    assert listed.value == [{"id": 1, "name": "pen"}, {"id": 2, "name": "ink"}]
    assert listed.version == last.version
    added = await api.mutation("items.add", {"name": "nib"})
    assert added.version == last.version + 1


async def test_reconnect_with_the_last_event_id_gets_no_duplicate(server, client, api):
    await api.mutation("items.add", {"name": "pen"})
    async with watch(client, "/api/watch/items.list") as stream:
        seen = await stream.next()
    assert server.stop() == 0
    server.restart()

    async with watch(client, "/api/watch/items.list", headers={"Last-Event-ID": seen.id}) as stream:
        await stream.quiet(1.0)
        added = await api.mutation("items.add", {"name": "ink"})
        change = await stream.next()
        await stream.quiet(0.3)

    assert (change.event, change.id, change.json) == (
        "value",
        str(added.version),
        {"value": [{"id": 1, "name": "pen"}, {"id": 2, "name": "ink"}], "version": added.version},
    )


async def test_reconnect_with_an_older_event_id_gets_the_current_value(server, client, api):
    await api.mutation("items.add", {"name": "pen"})
    async with watch(client, "/api/watch/items.list") as stream:
        seen = await stream.next()
    added = await api.mutation("items.add", {"name": "ink"})
    assert server.stop() == 0
    server.restart()

    async with watch(client, "/api/watch/items.list", headers={"Last-Event-ID": seen.id}) as stream:
        current = await stream.next(timeout=2.0)

    assert (current.event, current.id, current.json) == (
        "value",
        str(added.version),
        {"value": [{"id": 1, "name": "pen"}, {"id": 2, "name": "ink"}], "version": added.version},
    )


async def test_sigterm_ends_open_streams_and_exits_0(server, client, api):
    q = json.dumps([{"id": "n", "name": "items.count"}])
    async with (
        watch(client, "/api/watch/items.list") as one,
        watch(client, "/api/watch/items.count") as two,
        watch(client, "/api/watch", params={"q": q}) as many,
    ):
        for stream in (one, two, many):
            await stream.next()
        started = time.monotonic()
        code = await anyio.to_thread.run_sync(server.stop, signal.SIGTERM)
        elapsed = time.monotonic() - started
        for stream in (one, two, many):
            await stream.ended(timeout=1.0)

    assert code == 0
    assert elapsed < 3.0


async def test_sigint_exits_0(server):
    assert server.stop(signal.SIGINT) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_clean_stop_removes_the_leader_lease_file(server, sig):
    lease = server.db_path.with_name(server.db_path.name + ".leader")
    assert lease.read_text() == f"{server.process.pid}\n"
    assert server.stop(sig) == 0
    assert not lease.exists()


@pytest.mark.parametrize(
    ("extra_args", "checkpointed"), [((), True), (("--no-autocheckpoint",), False)]
)
async def test_no_autocheckpoint_leaves_the_wal_to_litestream(
    start_server, extra_args, checkpointed
):
    server = start_server("tests.apps.inventory", *extra_args)
    async with server.client() as client:
        await Api(client).mutation("blobs.add", {"size": BLOB})
        # The writer thread checkpoints just after the commit that filled the WAL: give it
        # the moment a checkpoint takes (and the same moment to one that should not run).
        deadline = time.monotonic() + 2
        while server.db_path.stat().st_size <= BLOB and time.monotonic() < deadline:
            await anyio.sleep(0.02)
        db_size = server.db_path.stat().st_size
        wal_size = server.db_path.with_name(server.db_path.name + "-wal").stat().st_size

    assert wal_size > BLOB
    if checkpointed:
        assert db_size > BLOB  # the server copied the WAL into the database on its own
    else:
        assert db_size < BLOB // 10  # nothing but Litestream (or shutdown) may checkpoint
