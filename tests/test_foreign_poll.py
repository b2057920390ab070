"""The hub's poll for other processes' commits: it looks at the file from the event loop
(`PRAGMA data_version` and the change log's newest version) and reads the log only when a
commit it has not received may be there. An idle hub, or one whose only writer is its own
process, reads nothing; a commit made elsewhere is still found by the poll alone."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from pydantic import BaseModel

from voicestack import QueryCtx, query
from voicestack.reactive.hub import Hub
from voicestack.reactive.subscription import Subscription
from voicestack.store import Migration, Store
from voicestack.store.data_version import DataVersionProbe

pytestmark = pytest.mark.anyio

MIGRATIONS = [Migration("items", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")]
POLL_S = 0.005


class NoArgs(BaseModel):
    pass


@query("polled.items")
def list_names(ctx: QueryCtx, args: NoArgs) -> list[str]:
    return [row["name"] for row in ctx.db.all("SELECT name FROM items ORDER BY id")]


def add(name: str):  # type: ignore[no-untyped-def]
    return lambda db: db.execute("INSERT INTO items(name) VALUES (?)", (name,))


def silent_store(path: Path) -> Store:
    """A store whose commits send no notices, like a process on a host where they cannot
    work: only a poll can find its commits."""
    store = Store(path)
    if store.notices is not None:
        store.notices.close()
        store.notices = None
    return store


async def test_an_idle_hub_polls_without_reading_the_change_log(tmp_path: Path) -> None:
    store = Store(tmp_path / "idle.db")
    store.start()
    hub = Hub(store, poll_s=POLL_S)
    await hub.start()
    try:
        await anyio.sleep(0.05)
        before = hub.foreign_reads
        await anyio.sleep(60 * POLL_S)  # sixty polls
        assert hub.foreign_reads == before
        assert before <= 1  # at most the first look, which has nothing to compare with
    finally:
        await hub.close()
        store.close()


async def test_this_process_s_own_commits_cost_the_poll_no_reads_once_received(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "own.db")
    store.migrate_app("polled", MIGRATIONS)
    store.start()
    hub = Hub(store, poll_s=POLL_S)
    await hub.start()
    try:
        for k in range(20):
            await store.write(add(f"item {k}"))
            await anyio.sleep(POLL_S)
        await anyio.sleep(0.05)
        settled = hub.foreign_reads
        await anyio.sleep(60 * POLL_S)
        assert hub.foreign_reads == settled
        assert settled < 20  # a read only when a poll came between a commit and its notice
    finally:
        await hub.close()
        store.close()


async def test_a_commit_elsewhere_with_no_notice_is_found_by_the_poll(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    writing = silent_store(path)
    writing.migrate_app("polled", MIGRATIONS)
    watching = Store(path)
    writing.start()
    watching.start()
    hub = Hub(watching, poll_s=POLL_S)
    await hub.start()
    try:
        channel = hub.open_channel(multi=False)
        await hub.subscribe(Subscription(channel, None), list_names, NoArgs(), None)
        with anyio.fail_after(5):
            assert b'"value":[]' in (await channel.next_chunk() or b"")
        before = hub.foreign_reads
        for name in ("pen", "ink"):
            await writing.write(add(name))
            with anyio.fail_after(5):
                assert name.encode() in (await channel.next_chunk() or b"")
        assert hub.foreign_reads > before
    finally:
        await hub.close()
        watching.close()
        writing.close()


def test_the_probe_says_moved_for_another_connection_s_commit_it_has_not_seen(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "probe.db")
    store.migrate_app("polled", MIGRATIONS)
    store.start()
    probe = DataVersionProbe(store.path)
    try:
        assert probe.committed_after(0) is False  # a new file: nothing committed in its log
        version = store.write_sync(add("pen")).version
        assert probe.committed_after(version - 1) is True
        # Not received yet (the read it led to fell short): still news at the next look.
        assert probe.committed_after(version - 1) is True
        assert probe.committed_after(version) is False  # received: nothing since
        assert probe.committed_after(version - 1) is False  # and the look is spent
        version = store.write_sync(add("ink")).version
        assert probe.committed_after(version) is False  # moved, but already received
        assert probe.committed_after(0) is False  # and the look is spent
    finally:
        probe.close()
        store.close()
