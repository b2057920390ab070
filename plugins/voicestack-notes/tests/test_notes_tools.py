"""The notes plugin against a real Store: saved notes are searchable, listed and watched live."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import voicestack_notes
from voicestack_notes import list_notes, save_note, search_notes

from voicestack import Caller, MutationCtx, QueryCtx
from voicestack.agent.tools import ToolCtx, ToolOutcome, parse_tool_args, run_tool
from voicestack.functions.apps import app_from_module
from voicestack.functions.registry import ServerFunction
from voicestack.reactive.hub import Hub
from voicestack.reactive.subscription import Subscription
from voicestack.store import ChangeSet, Store, WriteDB
from voicestack.store.db import ReadDB

pytestmark = pytest.mark.anyio

ADA = Caller("ada", "Ada")
BOB = Caller("bob", "Bob")
ADMIN = Caller("root", "Root", role="admin")
FUNCTIONS = {f.name: f for f in app_from_module(voicestack_notes).functions}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "notes.db")
    store.migrate_app("notes", voicestack_notes.MIGRATIONS)
    store.start()
    yield store
    store.close()


def make_ctx(store: Store, user: Caller | None, thread_id: str = "thread-1") -> ToolCtx:
    """A ToolCtx wired as the reply runner wires it: server functions run on the real store."""

    async def run_query(name: str, args: Any) -> Any:
        function = FUNCTIONS[name]
        parsed = function.parse_args(args)
        return await store.read(
            lambda snap: function.invoke(QueryCtx(snap.db(), user, snap.version), parsed)
        )

    async def run_mutation(name: str, args: Any) -> Any:
        function = FUNCTIONS[name]
        parsed = function.parse_args(args)
        return (await store.write(lambda db: function.invoke(MutationCtx(db, user), parsed))).value

    async def report_progress(value: Any) -> None:
        pass

    return ToolCtx(
        user=user,
        thread_id=thread_id,
        call_id="call-1",
        store=store,
        run_query=run_query,
        run_mutation=run_mutation,
        report_progress=report_progress,
    )


async def call(ctx: ToolCtx, tool: Any, arguments: dict[str, Any]) -> ToolOutcome:
    return await run_tool(tool, ctx, parse_tool_args(tool, json.dumps(arguments)), 5.0)


def run_list(store: Store, user: Caller | None, args: dict[str, Any]) -> list[dict[str, Any]]:
    parsed = list_notes.parse_args(args)
    return store.read_sync(
        lambda snap: list_notes.invoke(QueryCtx(snap.db(), user, snap.version), parsed)
    )


async def save(store: Store, user: Caller | None, title: str, body: str, thread: str) -> int:
    outcome = await call(make_ctx(store, user, thread), save_note, {"title": title, "body": body})
    assert outcome.ok, outcome.error
    return outcome.result["id"]


async def test_a_saved_note_is_found_by_search_and_listed(store: Store) -> None:
    ctx = make_ctx(store, ADA)
    saved = await call(
        ctx, save_note, {"title": "  Wifi password ", "body": "The router password is hunter2."}
    )
    assert saved == ToolOutcome(True, {"id": 1, "title": "Wifi password"}, None)

    found = await call(ctx, search_notes, {"query": "what's the wifi passwords?"})
    listed = run_list(store, ADA, {})
    created_at = listed[0]["createdAt"]
    note = {
        "id": 1,
        "threadId": "thread-1",
        "userId": "ada",
        "title": "Wifi password",
        "body": "The router password is hunter2.",
        "createdAt": created_at,
    }
    assert found == ToolOutcome(True, [note], None)
    assert listed == [note]
    assert run_list(store, ADA, {"threadId": "thread-1"}) == [note]
    assert run_list(store, ADA, {"threadId": "thread-2"}) == []
    assert await ctx.run_query("notes.list", {"limit": 1}) == [note]


async def test_search_ranks_title_matches_first_and_honours_limit(store: Store) -> None:
    body_id = await save(store, ADA, "Groceries", "buy milk and bread", "t")
    title_id = await save(store, ADA, "Milk", "the oat kind", "t")
    await save(store, ADA, "Unrelated", "nothing here", "t")
    ctx = make_ctx(store, ADA)

    found = await call(ctx, search_notes, {"query": "milk"})
    assert [n["id"] for n in found.result] == [title_id, body_id]
    limited = await call(ctx, search_notes, {"query": "milk", "limit": 1})
    assert [n["id"] for n in limited.result] == [title_id]


async def test_users_see_their_own_notes_and_admins_see_all(store: Store) -> None:
    ada_id = await save(store, ADA, "Ada's plan", "launch on Tuesday", "t-ada")
    bob_id = await save(store, BOB, "Bob's plan", "launch on Friday", "t-bob")

    def ids(outcome: ToolOutcome) -> list[int]:
        return sorted(n["id"] for n in outcome.result)

    assert ids(await call(make_ctx(store, ADA), search_notes, {"query": "launch"})) == [ada_id]
    assert ids(await call(make_ctx(store, BOB), search_notes, {"query": "launch"})) == [bob_id]
    everyone = await call(make_ctx(store, ADMIN), search_notes, {"query": "launch"})
    assert ids(everyone) == [ada_id, bob_id]
    assert [n["id"] for n in run_list(store, BOB, {})] == [bob_id]
    assert [n["id"] for n in run_list(store, None, {})] == [bob_id, ada_id]


async def test_fts_syntax_in_a_query_is_searched_as_words(store: Store) -> None:
    note_id = await save(store, ADA, "Recipe", 'the "secret" sauce AND NOT ketchup', "t")
    ctx = make_ctx(store, ADA)

    found = await call(ctx, search_notes, {"query": 'secret AND "sauce* NOT ( ^col:'})
    assert [n["id"] for n in found.result] == [note_id]
    empty = await call(ctx, search_notes, {"query": "?!"})
    assert empty == ToolOutcome(
        False, None, "ValueError: The query has no words: send words that appear in the note."
    )


async def test_the_index_follows_updates_and_deletes(store: Store) -> None:
    note_id = await save(store, ADA, "Door code", "1234", "t")
    ctx = make_ctx(store, ADA)

    def rename(db: WriteDB) -> None:
        db.execute("UPDATE notes SET title = 'Gate code' WHERE id = ?", (note_id,))

    await ctx.write(rename)
    assert (await call(ctx, search_notes, {"query": "door"})).result == []
    assert [n["id"] for n in (await call(ctx, search_notes, {"query": "gate"})).result] == [note_id]

    await ctx.write(lambda db: db.execute("DELETE FROM notes WHERE id = ?", (note_id,)))
    assert (await call(ctx, search_notes, {"query": "gate"})).result == []
    # FTS5 compares its index with the content table and raises when they differ.
    await ctx.write(
        lambda db: db.execute(
            "INSERT INTO notes_fts(notes_fts, rank) VALUES ('integrity-check', 1)"
        )
    )


async def test_save_commits_a_change_that_list_notes_depends_on(store: Store) -> None:
    commits: list[ChangeSet] = []
    store.add_commit_listener(commits.append)

    def read_set(db: ReadDB) -> set[str]:
        list_notes.invoke(QueryCtx(db, ADA, 0), list_notes.parse_args({}))
        return db.tables_read

    await save(store, ADA, "Call mum", "Sunday", "t")
    tables = await make_ctx(store, ADA).read(read_set)
    assert tables == {"notes"}
    assert len(commits) == 1
    assert commits[0].touches(tables)


def sse_value(chunk: bytes) -> Any:
    (data,) = [line for line in chunk.decode().splitlines() if line.startswith("data: ")]
    return json.loads(data.removeprefix("data: "))["value"]


async def test_a_watcher_of_notes_list_sees_a_saved_note_live(store: Store) -> None:
    hub = Hub(store)
    await hub.start()
    try:
        channel = hub.open_channel(multi=False)
        subscription = Subscription(channel, None)
        await hub.subscribe(subscription, list_notes, list_notes.parse_args({}), ADA)
        assert sse_value(await asyncio.wait_for(channel.next_chunk(), 5)) == []

        await save(store, ADA, "Live", "seen at once", "t")
        value = sse_value(await asyncio.wait_for(channel.next_chunk(), 5))
        assert [(n["id"], n["title"]) for n in value] == [(1, "Live")]
    finally:
        await hub.close()


def test_the_module_is_an_app_with_its_query_and_migrations() -> None:
    app = app_from_module(voicestack_notes, name="voicestack-notes")
    assert [f.name for f in app.functions] == ["notes.list"]
    assert all(isinstance(f, ServerFunction) for f in app.functions)
    assert [m.name for m in app.migrations] == ["notes", "notes_search"]
    assert list_notes.args_model.model_json_schema()["properties"]["threadId"]["anyOf"] == [
        {"type": "string"},
        {"type": "null"},
    ]


def test_migrations_run_once(tmp_path: Path) -> None:
    path = tmp_path / "again.db"
    for expected in (2, 0):
        store = Store(path)
        try:
            assert store.migrate_app("notes", voicestack_notes.MIGRATIONS) == expected
        finally:
            store.close()
