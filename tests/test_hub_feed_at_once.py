"""A commit made on the event loop reaches the feeds from the rows its writer handed over, inside
the commit itself, before its writer hears of it; a commit the hub cannot feed that way (made on
the writer thread, by another process, with rows nobody handed over, or re-running a query) is
fed by its batch, as before. Either way every commit reaches a feed once, in order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from tests.test_hub import Prefix, list_items, open_hub_store, processed, subscribe
from voicestack.reactive.hub import Hub
from voicestack.store import Store
from voicestack.store.changes import ChangeSet, remembered_rows
from voicestack.store.db import WriteDB
from voicestack.store.readers import Snapshot

pytestmark = pytest.mark.anyio


class NamesFeed:
    """A feed of the names inserted in `items`, each written down once with how it came: from
    the commit's memory or from a batch's read."""

    tables = frozenset({"items"})
    active = True

    def __init__(self) -> None:
        self.last = 0  # the newest rowid fed
        self.got: list[tuple[str, str]] = []

    def collect(self, snapshot: Snapshot, _changes: list[ChangeSet], _joins=()) -> list:
        sql = "SELECT id, name FROM items WHERE id > ? ORDER BY id"
        return list(snapshot.conn.execute(sql, (self.last,)))

    def deliver(self, collected: list, _joins=()) -> None:
        self._take(collected, "batch")

    def deliver_remembered(self, changes: list[ChangeSet]) -> bool:
        rows = remembered_rows(changes, "items")
        if rows is None:
            return False
        self._take(sorted(rows.items()), "memory")
        return True

    def _take(self, rows: list, how: str) -> None:
        for rowid, name in rows:
            if rowid > self.last:
                self.got.append((name, how))
                self.last = rowid

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.got]


def _insert(name: str, remember: bool = True):
    def insert(db: WriteDB) -> None:
        rowid = db.execute("INSERT INTO items(name) VALUES (?)", (name,)).last_rowid
        if remember:
            db.remember("items", rowid, name)

    return insert


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Hub, Store, NamesFeed]]:
    store = open_hub_store(tmp_path / "hub.db")
    # Other processes' commits are looked for once, at the start: the look uses the reader,
    # and a batch that finds it busy waits for the batch loop.
    hub = Hub(store, poll_s=3600)
    await hub.start()
    feed = NamesFeed()
    hub.add_feed(feed)
    await anyio.sleep(0.05)
    yield hub, store, feed
    await hub.close()
    store.close()


async def test_a_commit_on_the_loop_is_fed_before_its_writer_hears_of_it(running):
    hub, store, feed = running
    fed_when_committed: list[list[tuple[str, str]]] = []
    # A loop's commit listeners run in the order they were added, before the writer is told:
    # the hub's first.
    store.add_loop_commit_listener(lambda _changeset: fed_when_committed.append(list(feed.got)))
    result = await store.write(_insert("a"), on_loop=True)
    assert fed_when_committed == [[("a", "memory")]]
    await processed(hub, result.version)
    assert feed.got == [("a", "memory")]  # its batch sent nothing more


async def test_commits_the_hub_cannot_feed_from_memory_are_fed_by_their_batch(running):
    hub, store, feed = running
    await store.write(_insert("from the writer thread"))
    await store.write(_insert("nothing handed over", remember=False), on_loop=True)
    watched, _ = await subscribe(hub, list_items, Prefix())
    await store.write(_insert("a query re-runs"), on_loop=True)
    version = (await store.write(_insert("after the query"), on_loop=True)).version
    await processed(hub, version)
    with anyio.fail_after(5):
        while len(feed.got) < 4:
            await anyio.sleep(0.005)
    assert feed.got == [
        ("from the writer thread", "batch"),
        ("nothing handed over", "batch"),
        ("a query re-runs", "batch"),
        ("after the query", "batch"),
    ]
    assert watched is not None


async def test_every_commit_is_fed_once_in_order_however_it_came(running):
    _hub, store, feed = running
    other = Store(store.path)  # another process on the same file: its commits come from the log
    other.start()
    try:
        expected = []
        for i in range(30):
            name = f"item {i}"
            expected.append(name)
            if i % 5 == 4:
                other.write_sync(_insert(name))
            else:
                await store.write(_insert(name, remember=i % 3 != 0), on_loop=i % 2 == 0)
        with anyio.fail_after(5):
            while len(feed.got) < len(expected):
                await anyio.sleep(0.005)
        assert feed.names == expected
        assert {how for _, how in feed.got} == {"memory", "batch"}
    finally:
        other.close()


async def test_a_commit_is_fed_once_the_writer_is_free_again(running):
    _hub, store, feed = running
    meanwhile: list[int] = []
    feed_from_memory = feed.deliver_remembered

    def deliver_remembered(changes: list[ChangeSet]) -> bool:
        # Another thread's write commits while the feed writes: neither the writer nor the
        # file's lock is held by the commit being fed, however many watchers it has.
        write = store.writer.submit(_insert("meanwhile", remember=False))
        meanwhile.append(write.result(5).version)
        return feed_from_memory(changes)

    feed.deliver_remembered = deliver_remembered
    result = await store.write(_insert("a"), on_loop=True)
    assert meanwhile == [result.version + 1]
    assert feed.got[0] == ("a", "memory")
