"""Messages indexed for search just after their commit (voicestack/agent/search_index.py): found
once the send answers, the index always matching the messages, and nothing lost by a stop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import apsw
import httpx
import pytest

from tests.support.agent import Threads, marker
from tests.support.memory import ids
from tests.support.server import ServerProcess
from tests.support.sse import watch
from voicestack.agent.search_index import PENDING_TABLE, index_pending_messages
from voicestack.agent.threads import insert_message, insert_thread
from voicestack.config import Settings
from voicestack.runtime import Runtime
from voicestack.schema import ALL_MIGRATIONS
from voicestack.store.db import WriteDB
from voicestack.store.store import Store

pytestmark = pytest.mark.anyio


def check_index(db: WriteDB) -> None:
    """FTS5's own check of the index against the messages' texts (raises when they differ)."""
    db.execute("INSERT INTO message_search(message_search, rank) VALUES ('integrity-check', 1)")


def matching(db: WriteDB, word: str) -> list[str]:
    return [
        row["id"]
        for row in db.all(
            "SELECT m.id FROM message_search JOIN messages m ON m.rowid = message_search.rowid"
            " WHERE message_search MATCH ? ORDER BY m.id",
            (word,),
        )
    ]


def pending(db: WriteDB) -> list[str]:
    return [
        row["id"]
        for row in db.all(
            f"SELECT m.id FROM {PENDING_TABLE} p JOIN messages m ON m.rowid = p.rowid ORDER BY m.id"
        )
    ]


async def test_a_sent_message_is_found_by_a_search_made_once_the_send_answers(rt: Runtime):
    thread_id = (await rt.mutation("threads.create", {"title": "t"}, None)).value["id"]
    for k in range(20):
        sent = await rt.mutation(
            "messages.send", {"threadId": thread_id, "text": f"The quokka{k} smiled."}, None
        )
        hits = await rt.query("memory.search", {"query": f"quokka{k}", "threadId": thread_id}, None)
        assert ids(hits.value) == [sent.value["messageId"]]


@pytest.mark.agent_server
async def test_a_watched_search_updates_when_the_index_takes_a_new_message_in(
    client: httpx.AsyncClient,
) -> None:
    w = marker()
    args = json.dumps({"query": f"{w}", "mode": "text"})
    threads = Threads(client)
    thread_id = await threads.create()
    async with watch(client, "/api/watch/memory.search", params={"args": args}) as stream:
        first = (await stream.next(10)).json["value"]
        # Posted as the assistant: no reply follows, whose writes would run the search again.
        posted = await client.post(
            "/api/mutation/messages.post",
            json={"args": {"threadId": thread_id, "text": f"The {w} zeppelin flew over."}},
        )
        message_id = posted.json()["value"]["messageId"]
        while not (value := (await stream.next(10)).json["value"]):
            pass
    assert first == []
    assert ids(value) == [message_id]


@pytest.mark.agent_server
async def test_a_watched_searchs_first_value_has_what_another_writer_left_unindexed(
    client: httpx.AsyncClient, server: ServerProcess
) -> None:
    w = marker()
    other = Store(server.db_path, migrations=ALL_MIGRATIONS)  # another writer on the same file
    other.start()
    try:

        def save(db: WriteDB) -> str:
            thread_id = insert_thread(db, None, title="t")
            return insert_message(db, thread_id, "user", "complete", text=f"The {w} hopped.")

        message_id = other.write_sync(save).value
    finally:
        other.close()
    args = json.dumps({"query": f"{w}", "mode": "text"})
    async with watch(client, "/api/watch/memory.search", params={"args": args}) as stream:
        first = (await stream.next(10)).json["value"]
    assert ids(first) == [message_id]


async def test_the_index_matches_the_messages_through_edits_and_deletes(rt: Runtime):
    def first(db: WriteDB) -> dict[str, str]:
        thread_id = insert_thread(db, None, title="t")
        made = {
            word: insert_message(db, thread_id, "user", "complete", text=f"{word} words")
            for word in ("alpha", "bravo", "charlie")
        }
        return {"thread": thread_id, **made}

    made = (await rt.store.write(first)).value
    await rt.store.write(index_pending_messages)

    def second(db: WriteDB) -> dict[str, Any]:
        def set_text(message_id: str, text: str) -> None:
            db.execute("UPDATE messages SET text = ? WHERE id = ?", (text, message_id))

        def delete(message_id: str) -> None:
            db.execute("DELETE FROM thread_events WHERE ref = ?", (message_id,))
            db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

        thread_id = made["thread"]
        set_text(made["alpha"], "delta words")  # indexed, then edited
        delete(made["bravo"])  # indexed, then deleted
        echo = insert_message(db, thread_id, "user", "complete", text="echo words")
        set_text(echo, "foxtrot words")  # noted, then edited before it was indexed
        golf = insert_message(db, thread_id, "user", "complete", text="golf words")
        delete(golf)  # noted, then deleted before it was indexed
        return {"echo": echo, "pending": pending(db)}

    later = (await rt.store.write(second)).value
    assert later["pending"] == sorted([made["alpha"], later["echo"]])

    def after(db: WriteDB) -> dict[str, list[str]]:
        index_pending_messages(db)
        check_index(db)
        words = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf")
        return {word: matching(db, word) for word in words}

    found = (await rt.store.write(after)).value
    assert found == {
        "alpha": [],
        "bravo": [],
        "charlie": [made["charlie"]],
        "delta": [made["alpha"]],
        "echo": [],
        "foxtrot": [later["echo"]],
        "golf": [],
    }


async def test_messages_noted_before_a_stop_are_indexed_at_the_next_start(tmp_path: Path):
    db_file = tmp_path / "stopped.db"
    store = Store(db_file, migrations=ALL_MIGRATIONS)
    store.start()
    try:

        def save(db: WriteDB) -> str:
            thread_id = insert_thread(db, None, title="t")
            return insert_message(db, thread_id, "user", "complete", text="The wombat waved.")

        message_id = store.write_sync(save).value  # noted; no runtime runs to index it
    finally:
        store.close()
    conn = apsw.Connection(str(db_file))
    assert conn.execute(f"SELECT count(*) FROM {PENDING_TABLE}").get == 1
    conn.close()

    runtime = Runtime(Settings(db=db_file))
    await runtime.start()
    try:
        with anyio.fail_after(10):
            while not (
                hits := await runtime.query("memory.search", {"query": "wombat"}, None)
            ).value:
                await anyio.sleep(0.02)
        left = await runtime.store.read(
            lambda s: s.db().scalar(f"SELECT count(*) FROM {PENDING_TABLE}")
        )
    finally:
        await runtime.close()
    assert ids(hits.value) == [message_id]
    assert left == 0


async def test_a_database_indexed_by_the_old_triggers_goes_on_after_the_upgrade(tmp_path: Path):
    db_file = tmp_path / "old.db"
    names = [migration.name for migration in ALL_MIGRATIONS]
    before = ALL_MIGRATIONS[: names.index("search_index_after_commit")]
    store = Store(db_file, migrations=before)
    store.start()
    try:

        def save(db: WriteDB) -> list[str]:
            thread_id = insert_thread(db, None, title="t")
            texts = ("kept words", "edited words", "deleted words")
            # Placed by hand: that schema keeps no last position in the thread's row.
            return [
                insert_message(db, thread_id, "user", "complete", text=t, position=i)
                for i, t in enumerate(texts, start=1)
            ]

        kept, edited, deleted = store.write_sync(save).value  # indexed in their own commit
    finally:
        store.close()

    store = Store(db_file, migrations=ALL_MIGRATIONS)
    store.start()
    try:

        def change(db: WriteDB) -> list[str]:
            waiting = pending(db)
            db.execute("UPDATE messages SET text = 'changed words' WHERE id = ?", (edited,))
            db.execute("DELETE FROM thread_events WHERE ref = ?", (deleted,))
            db.execute("DELETE FROM messages WHERE id = ?", (deleted,))
            return waiting

        waiting = store.write_sync(change).value

        def after(db: WriteDB) -> dict[str, list[str]]:
            index_pending_messages(db)
            check_index(db)
            return {word: matching(db, word) for word in ("kept", "edited", "changed", "deleted")}

        found = store.write_sync(after).value
    finally:
        store.close()
    assert waiting == []  # nothing to index again: the upgrade keeps the index as it was
    assert found == {"kept": [kept], "edited": [], "changed": [edited], "deleted": []}


def test_editing_a_noted_message_shows_in_its_commit_so_the_indexer_hears_of_it(tmp_path: Path):
    """The indexer learns of work from a commit's changes (SearchIndexer._on_commit): noting an
    already noted message again must be one of them."""
    store = Store(tmp_path / "edits.db", migrations=ALL_MIGRATIONS)  # no indexer runs here
    store.start()
    heard: list[frozenset[str]] = []
    store.add_commit_listener(lambda changes: heard.append(changes.tables))
    try:

        def save(db: WriteDB) -> str:
            thread_id = insert_thread(db, None, title="t")
            return insert_message(db, thread_id, "user", "complete", text="old words")

        message_id = store.write_sync(save).value

        def edit(db: WriteDB) -> list[str]:
            db.execute("UPDATE messages SET text = 'new words' WHERE id = ?", (message_id,))
            return pending(db)

        still = store.write_sync(edit).value
        store.write_sync(index_pending_messages)
        found = store.write_sync(lambda db: (matching(db, "old"), matching(db, "new"))).value
    finally:
        store.close()
    assert still == [message_id]
    assert {"messages", PENDING_TABLE} <= heard[-2]  # the edit's commit (before the index's)
    assert found == ([], [message_id])


async def test_a_search_indexes_first_what_another_process_saved(rt: Runtime):
    other = Store(rt.settings.db, migrations=ALL_MIGRATIONS)  # another writer on the same file
    other.start()
    try:

        def save(db: WriteDB) -> str:
            thread_id = insert_thread(db, None, title="t")
            return insert_message(db, thread_id, "user", "complete", text="The numbat dug.")

        message_id = other.write_sync(save).value
    finally:
        other.close()
    hits = await rt.query("memory.search", {"query": "numbat"}, None)
    version = await rt.store.read(lambda snapshot: snapshot.version)
    again = await rt.query("memory.search", {"query": "numbat"}, None)
    assert ids(hits.value) == ids(again.value) == [message_id]
    # Nothing waited the second time: the search wrote nothing.
    assert await rt.store.read(lambda snapshot: snapshot.version) == version
