"""The subscription hub on a real Store: sharing, invalidation, and newest-value-only channels."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from pydantic import BaseModel

from voicestack import FunctionError, QueryCtx, query
from voicestack.reactive.channel import Channel, FeedChannel, Outbox
from voicestack.reactive.hub import Hub
from voicestack.reactive.subscription import Subscription
from voicestack.store import Migration, Store
from voicestack.store.changes import ChangeSet
from voicestack.store.readers import Snapshot

pytestmark = pytest.mark.anyio

MIGRATIONS = [
    Migration("items", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"),
    Migration("audit", "CREATE TABLE audit (id INTEGER PRIMARY KEY, note TEXT NOT NULL)"),
]


class Prefix(BaseModel):
    prefix: str = ""


class ItemId(BaseModel):
    id: int


@query("items.list")
def list_items(ctx: QueryCtx, args: Prefix) -> list[dict]:
    return ctx.db.all(
        "SELECT id, name FROM items WHERE substr(name, 1, ?) = ? ORDER BY id",
        (len(args.prefix), args.prefix),
    )


@query("audit.count")
def count_audit(ctx: QueryCtx) -> int:
    return ctx.db.scalar("SELECT count(*) FROM audit")


@query("items.get")
def get_item(ctx: QueryCtx, args: ItemId) -> dict:
    row = ctx.db.one("SELECT id, name FROM items WHERE id = ?", (args.id,))
    if row is None:
        raise FunctionError("not_found", f"No item has id {args.id}.", 404)
    return row


def open_hub_store(path: Path) -> Store:
    """A started Store on `path` with the tables these tests query."""
    store = Store(path)
    store.migrate_app("hubtest", MIGRATIONS)
    store.start()
    return store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = open_hub_store(tmp_path / "hub.db")
    yield store
    store.close()


@pytest.fixture
async def hub(store: Store) -> AsyncIterator[Hub]:
    hub = Hub(store)
    await hub.start()
    yield hub
    await hub.close()


async def write(store: Store, sql: str, params: tuple = ()) -> int:
    """Commit one statement; returns the commit's version."""
    return (await store.write(lambda db: db.execute(sql, params))).version


async def processed(hub: Hub, version: int) -> None:
    """Wait until the hub has run the batch for `version` (and pushed what changed)."""
    with anyio.fail_after(5):
        while hub.version < version:
            await anyio.sleep(0.005)


async def next_chunk(channel: Outbox) -> bytes | None:
    with anyio.fail_after(5):
        return await channel.next_chunk()


async def nothing_more(channel: Outbox) -> None:
    with anyio.move_on_after(0.2):
        chunk = await channel.next_chunk()
        raise AssertionError(f"expected nothing more, got {chunk!r}")


def value_event(version: int, value: bytes) -> bytes:
    return b'id: %d\nevent: value\ndata: {"value":%s,"version":%d}\n\n' % (version, value, version)


async def subscribe(hub: Hub, function, args: BaseModel, last_version: int | None = None):
    channel = hub.open_channel(multi=False)
    subscription = Subscription(channel, None)
    await hub.subscribe(subscription, function, args, None, last_version)
    return channel, subscription


async def test_identical_subscriptions_share_one_query_and_one_payload(hub, store):
    first_channel, first = await subscribe(hub, list_items, Prefix())
    second_channel, second = await subscribe(hub, list_items, Prefix())
    other_channel, other = await subscribe(hub, list_items, Prefix(prefix="x"))

    assert (hub.shared_count, hub.subscription_count) == (2, 3)
    assert first.shared is second.shared
    assert other.shared is not first.shared
    initial = [await next_chunk(c) for c in (first_channel, second_channel, other_channel)]
    assert initial == [value_event(0, b"[]")] * 3

    version = await write(store, "INSERT INTO items(name) VALUES ('pen')")
    a = await next_chunk(first_channel)
    b = await next_chunk(second_channel)

    assert a == value_event(version, b'[{"id":1,"name":"pen"}]')
    assert a is b  # serialized once, the same bytes for every subscriber
    await nothing_more(other_channel)  # its value ([] for prefix "x") did not change

    for subscription in (first, second, other):
        hub.unsubscribe(subscription)
    assert (hub.shared_count, hub.subscription_count) == (0, 0)


async def test_a_channel_not_drained_gets_only_the_newest_value(hub, store):
    channel, _ = await subscribe(hub, list_items, Prefix())
    assert await next_chunk(channel) == value_event(0, b"[]")

    versions = []
    for name in ("a", "b", "c"):
        versions.append(await write(store, "INSERT INTO items(name) VALUES (?)", (name,)))
        await processed(hub, versions[-1])  # each change pushed on its own

    assert await next_chunk(channel) == value_event(
        versions[-1], b'[{"id":1,"name":"a"},{"id":2,"name":"b"},{"id":3,"name":"c"}]'
    )
    await nothing_more(channel)


async def test_a_multi_channel_sends_what_is_pending_as_one_snapshot(hub, store):
    channel = hub.open_channel(multi=True)
    items, audit = Subscription(channel, "items"), Subscription(channel, "audit")
    # Joins requested together are admitted in one batch: one snapshot, one chunk.
    joined = [
        hub.join(items, list_items, Prefix(), None),
        hub.join(audit, count_audit, count_audit.args_model(), None),
    ]
    for ready in joined:
        await ready
    assert await next_chunk(channel) == (
        b'id: 0\nevent: value\ndata: {"id":"items","value":[],"version":0}\n\n'
        b'id: 0\nevent: value\ndata: {"id":"audit","value":0,"version":0}\n\n'
    )

    first = await write(store, "INSERT INTO items(name) VALUES ('pen')")
    await processed(hub, first)
    second = await write(store, "INSERT INTO audit(note) VALUES ('n')")
    await processed(hub, second)

    # The items value of `first` is still the value at `second`: both go out at `second`.
    assert await next_chunk(channel) == (
        b'id: %d\nevent: value\ndata: {"id":"items","value":[{"id":1,"name":"pen"}],"version":%d}'
        b"\n\n"
        b'id: %d\nevent: value\ndata: {"id":"audit","value":1,"version":%d}\n\n'
    ) % (second, second, second, second)


async def test_a_write_to_another_table_does_not_rerun_the_query(hub, store):
    channel, _ = await subscribe(hub, list_items, Prefix())
    await next_chunk(channel)
    reruns = hub.reruns

    version = await write(store, "INSERT INTO audit(note) VALUES ('n')")
    await processed(hub, version)

    assert hub.reruns == reruns
    await nothing_more(channel)


async def test_a_subscriber_that_has_the_current_version_gets_no_initial_value(hub, store):
    version = await write(store, "INSERT INTO items(name) VALUES ('pen')")
    await processed(hub, version)
    channel, _ = await subscribe(hub, list_items, Prefix(), last_version=version)
    await nothing_more(channel)

    newer = await write(store, "INSERT INTO items(name) VALUES ('ink')")
    assert await next_chunk(channel) == value_event(
        newer, b'[{"id":1,"name":"pen"},{"id":2,"name":"ink"}]'
    )


async def test_a_query_that_refuses_on_its_first_run_is_not_subscribed(hub):
    channel = hub.open_channel(multi=False)
    with pytest.raises(FunctionError) as refused:
        await hub.subscribe(Subscription(channel, None), get_item, ItemId(id=7), None)

    assert (refused.value.code, refused.value.message, refused.value.status) == (
        "not_found",
        "No item has id 7.",
        404,
    )
    assert (hub.shared_count, hub.subscription_count) == (0, 0)


async def test_closing_the_hub_ends_every_channel(store):
    hub = Hub(store)
    await hub.start()
    channel, _ = await subscribe(hub, list_items, Prefix())
    assert await next_chunk(channel) == value_event(0, b"[]")
    await hub.close()
    assert await next_chunk(channel) is None


class Gate:
    """A gate observer (like the access guard) that holds or closes `channel` at every commit
    that touches `audit`."""

    tables = frozenset({"audit"})
    active = True

    def __init__(self, channel: Channel, action: str) -> None:
        self.channel = channel
        self.action = action

    def collect(self, snapshot: Snapshot, _changes: list[ChangeSet]) -> int:
        return snapshot.version

    def deliver(self, _version: int) -> None:
        getattr(self.channel, self.action)()


async def write_item_and_note(store: Store, name: str) -> int:
    """Commit an item and an audit note together; returns the commit's version."""

    def both(db) -> None:
        db.execute("INSERT INTO items(name) VALUES (?)", (name,))
        db.execute("INSERT INTO audit(note) VALUES ('n')")

    return (await store.write(both)).version


@pytest.mark.parametrize("action", ["hold", "close"])
async def test_a_gate_acts_before_anything_of_its_batch_is_sent(hub, store, action):
    channel, _ = await subscribe(hub, list_items, Prefix())
    assert await next_chunk(channel) == value_event(0, b"[]")
    hub.add_observer(Gate(channel, action), gate=True)
    before = await write(store, "INSERT INTO items(name) VALUES ('a')")
    await processed(hub, before)  # pending, not drained
    at = await write_item_and_note(store, "b")
    await processed(hub, at)

    # What was pending is of an older commit and still goes out; the gate's commit does not.
    assert await next_chunk(channel) == value_event(before, b'[{"id":1,"name":"a"}]')
    if action == "close":
        assert await next_chunk(channel) is None
        return
    await nothing_more(channel)
    channel.resume()
    assert await next_chunk(channel) == value_event(
        at, b'[{"id":1,"name":"a"},{"id":2,"name":"b"}]'
    )


async def test_a_held_channel_that_is_closed_never_sends_what_it_held(hub, store):
    channel, _ = await subscribe(hub, list_items, Prefix())
    assert await next_chunk(channel) == value_event(0, b"[]")
    hub.add_observer(Gate(channel, "hold"), gate=True)
    await processed(hub, await write_item_and_note(store, "a"))
    await processed(hub, await write(store, "INSERT INTO items(name) VALUES ('b')"))
    await nothing_more(channel)
    channel.close()
    assert await next_chunk(channel) is None


async def test_a_held_feed_sends_its_older_events_and_keeps_the_rest_in_order():
    outbox = FeedChannel()
    outbox.append(1, b"one")
    outbox.hold()
    outbox.append(2, b"two")
    outbox.append(3, b"three")
    assert await next_chunk(outbox) == b"one"
    await nothing_more(outbox)
    outbox.resume()
    assert await next_chunk(outbox) == b"twothree"
    outbox.hold()
    outbox.append(4, b"four")
    outbox.close()
    assert await next_chunk(outbox) is None


class Recorder:
    """A feed or an observer of `items` that writes down when it collects and delivers."""

    tables = frozenset({"items"})
    active = True

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def collect(self, _snapshot: Snapshot, _changes: list[ChangeSet], _joins=()) -> None:
        self.log.append(f"{self.name} collects")

    def deliver(self, _collected: None, _joins=()) -> None:
        self.log.append(f"{self.name} delivers")

    def deliver_remembered(self, _changes: list[ChangeSet]) -> bool:
        return False  # its commits hand nothing over: batches read them


async def test_a_small_commit_reaches_the_feeds_before_any_observer_reads_it(hub, store):
    log: list[str] = []
    hub.add_observer(Recorder("observer", log))
    hub.add_feed(Recorder("feed", log))
    await processed(hub, await write(store, "INSERT INTO items(name) VALUES ('a')"))
    assert log == ["feed collects", "feed delivers", "observer collects", "observer delivers"]


class SlowGate:
    """A gate whose reading of a batch takes a while on the hub's reader thread."""

    tables = frozenset({"audit"})
    active = True

    def __init__(self) -> None:
        self.reading = threading.Event()

    def collect(self, snapshot: Snapshot, _changes: list[ChangeSet]) -> None:
        self.reading.set()
        # Inside SQLite for a while: the reader is busy on this thread until it returns.
        snapshot.conn.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000)"
            " SELECT count(*) FROM c"
        ).fetchall()

    def deliver(self, _collected: None) -> None:
        pass


async def test_closing_the_hub_while_a_batch_reads_waits_for_the_reading_and_ends(store):
    hub = Hub(store)
    await hub.start()
    gate = SlowGate()
    hub.add_observer(gate, gate=True)
    await write(store, "INSERT INTO audit(note) VALUES ('n')")
    with anyio.fail_after(5):
        while not gate.reading.is_set():
            await anyio.sleep(0.005)
        await hub.close()  # the batch is cancelled mid-read; the reader is still its thread's
