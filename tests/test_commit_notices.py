"""Commit notices between the processes of one database file (serve --workers): a commit made
through one Store reaches the hub of another Store on the same file at once, with no poll;
a notice goes to every other process of that file and to no one else, and one whose process
ended is dropped without a word."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import pytest
from pydantic import BaseModel

from voicestack import QueryCtx, query
from voicestack.reactive.hub import Hub
from voicestack.reactive.subscription import Subscription
from voicestack.store import Migration, Store
from voicestack.store.commit_notices import CommitNotices

pytestmark = pytest.mark.anyio

MIGRATIONS = [Migration("items", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")]


class NoArgs(BaseModel):
    pass


@query("noticed.items")
def list_names(ctx: QueryCtx, args: NoArgs) -> list[str]:
    return [row["name"] for row in ctx.db.all("SELECT name FROM items ORDER BY id")]


def notices_for(path: Path) -> CommitNotices:
    notices = CommitNotices.open(path)
    if notices is None:
        pytest.skip("commit notices need Linux's abstract Unix sockets")
    return notices


async def test_a_commit_in_another_store_reaches_the_hub_with_polling_off(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    writing = Store(path)
    writing.migrate_app("noticed", MIGRATIONS)
    watching = Store(path)
    writing.start()
    watching.start()
    hub = Hub(watching, poll_s=3600)  # its poll never comes: only a notice can tell it
    await hub.start()
    try:
        assert watching.notices is not None
        channel = hub.open_channel(multi=False)
        await hub.subscribe(Subscription(channel, None), list_names, NoArgs(), None)
        with anyio.fail_after(5):
            assert b'"value":[]' in (await channel.next_chunk() or b"")
        await writing.write(lambda db: db.execute("INSERT INTO items(name) VALUES ('pen')"))
        with anyio.fail_after(5):
            assert b'"value":["pen"]' in (await channel.next_chunk() or b"")
        assert watching.notices.received >= 1
    finally:
        await hub.close()
        watching.close()
        writing.close()


def test_a_notice_reaches_every_other_process_of_the_file_and_no_one_else(tmp_path: Path) -> None:
    (tmp_path / "one.db").touch()
    (tmp_path / "other.db").touch()
    sender = notices_for(tmp_path / "one.db")
    peer = notices_for(tmp_path / "one.db")
    stranger = notices_for(tmp_path / "other.db")
    try:
        sender.notify()
        assert sender.peers == 1
        assert peer.drain() == 1
        assert sender.drain() == 0  # never to itself
        assert stranger.drain() == 0
    finally:
        for notices in (sender, peer, stranger):
            notices.close()


def test_a_peer_whose_process_ended_is_dropped_quietly(tmp_path: Path) -> None:
    (tmp_path / "one.db").touch()
    sender = notices_for(tmp_path / "one.db")
    peer = notices_for(tmp_path / "one.db")
    try:
        sender.notify()
        assert sender.peers == 1
        peer.close()  # as when its process ends: the abstract name goes with the socket
        sender.notify()
        assert sender.peers == 0
    finally:
        sender.close()


def test_only_names_of_the_exact_shape_are_peers(tmp_path: Path) -> None:
    # Abstract names carry no permissions: anyone on the host may bind one with the prefix.
    (tmp_path / "one.db").touch()
    sender = notices_for(tmp_path / "one.db")
    prefix = sender.name.rsplit("-", 2)[0]
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    squatter.bind(f"\0{prefix}-not-a-voicestack-process")
    try:
        sender.notify()
        assert sender.peers == 0
    finally:
        squatter.close()
        sender.close()
