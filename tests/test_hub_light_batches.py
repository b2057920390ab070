"""Light batches (a few rows, no query to re-run, no join, no gate) are delivered as soon as the
hub hears of their commit; the others wait for the batch loop. Either way a feed sees every
commit once, in order, whichever thread or process committed it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from tests.test_hub import Prefix, list_items, open_hub_store, processed, subscribe
from voicestack.reactive.hub import Hub
from voicestack.store import Store
from voicestack.store.changes import ChangeSet
from voicestack.store.readers import Snapshot

pytestmark = pytest.mark.anyio


class VersionFeed:
    """A feed of `items` that writes down the versions of the commits each batch gives it (a
    batch's commits in no particular order: a real feed reads its rows in order)."""

    tables = frozenset({"items"})
    active = True

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def collect(self, _snapshot: Snapshot, changes: list[ChangeSet], _joins=()) -> list[int]:
        return sorted(changeset.version for changeset in changes)

    def deliver(self, collected: list[int], _joins=()) -> None:
        self.batches.append(collected)

    def deliver_remembered(self, _changes: list[ChangeSet]) -> bool:
        return False  # its inserts hand nothing over: every batch reads

    @property
    def versions(self) -> list[int]:
        return [version for batch in self.batches for version in batch]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Hub, Store, Path]]:
    path = tmp_path / "hub.db"
    store = open_hub_store(path)
    hub = Hub(store)
    await hub.start()
    yield hub, store, path
    await hub.close()
    store.close()


def _insert(name: str):
    return lambda db: db.execute("INSERT INTO items(name) VALUES (?)", (name,))


async def test_a_light_commit_is_delivered_in_the_loop_turn_the_hub_hears_of_it(tmp_path):
    store = open_hub_store(tmp_path / "hub.db")
    # The look for other processes' commits uses the reader, which keeps a batch from running
    # at once meanwhile: here it looks once, at the start, and not again during the test.
    hub = Hub(store, poll_s=3600)
    await hub.start()
    try:
        await asyncio.sleep(0.05)
        await _delivered_right_after_the_hub_hears(hub, store)
    finally:
        await hub.close()
        store.close()


async def _delivered_right_after_the_hub_hears(hub: Hub, store: Store) -> None:
    feed = VersionFeed()
    hub.add_feed(feed)
    loop = asyncio.get_running_loop()
    seen_right_after: list[list[int]] = []

    def after_the_hub(_changeset: ChangeSet) -> None:
        # Commit listeners run in the order they were added: this one's callback comes right
        # after the hub's in the loop's queue, before the batch loop could have woken.
        loop.call_soon_threadsafe(lambda: seen_right_after.append(feed.versions))

    store.add_commit_listener(after_the_hub)
    result = await store.write(_insert("a"))  # committed on the writer thread
    await asyncio.sleep(0)
    assert seen_right_after == [[result.version]]
    assert hub.version == result.version


async def test_commits_of_every_thread_and_process_reach_a_feed_once_each_in_order(running):
    hub, store, path = running
    feed = VersionFeed()
    hub.add_feed(feed)
    other = Store(path)  # another process on the same file: its commits come through the log
    other.start()
    try:
        versions: list[int] = []
        lock = threading.Lock()

        def from_threads(i: int) -> None:
            for j in range(5):
                version = other.write_sync(_insert(f"other {i} {j}")).version
                with lock:
                    versions.append(version)

        threads = [threading.Thread(target=from_threads, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        watched = None
        for i in range(20):
            on_loop = i % 2 == 0
            versions.append((await store.write(_insert(f"mine {i}"), on_loop=on_loop)).version)
            if i == 10:  # a query joining midway: its batches are the loop's, not light
                watched, _ = await subscribe(hub, list_items, Prefix(prefix="mine"))
        for thread in threads:
            thread.join()
        await processed(hub, max(versions))
        # Writes queued together share one commit, and so its version.
        committed = sorted(set(versions))
        with anyio.fail_after(5):
            while len(feed.versions) < len(committed):
                await anyio.sleep(0.005)
        assert feed.versions == committed
        assert watched is not None
    finally:
        other.close()
