"""The Store without a server: connection settings, migrations, group commit, the change feed."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import anyio
import apsw
import pytest

from tests.support.store import AUDIT, ITEMS, WriterHold, insert, names, open_store
from voicestack.store import ChangeSet, Store
from voicestack.store.migrations import CORE_MIGRATIONS

PRAGMAS = ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def store(db_path: Path):
    store = open_store(db_path)
    yield store
    store.close()


@pytest.fixture
def changesets(store: Store) -> list[ChangeSet]:
    """Every ChangeSet the store publishes from now on."""
    seen: list[ChangeSet] = []
    store.add_commit_listener(seen.append)
    return seen


def inspect(path: Path, sql: str) -> list[tuple]:
    """Rows of `sql` read with a plain connection of our own, outside the Store."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_writer_connection_settings(store):
    result = store.write_sync(lambda db: {p: db.scalar(f"PRAGMA {p}") for p in PRAGMAS})
    settings = result.value
    assert settings["busy_timeout"] >= 5000
    assert settings == {
        "journal_mode": "wal",
        "synchronous": 1,
        "busy_timeout": settings["busy_timeout"],
        "foreign_keys": 1,
    }


def test_reader_connection_settings(store):
    wanted = (*PRAGMAS, "query_only")
    pooled = store.read_sync(lambda s: {p: s.db().scalar(f"PRAGMA {p}") for p in wanted})
    reader = store.reader()
    try:
        own = reader.read(lambda s: {p: s.db().scalar(f"PRAGMA {p}") for p in wanted})
    finally:
        reader.close()
    for settings in (pooled, own):
        assert settings["busy_timeout"] >= 5000
        assert settings == {
            "journal_mode": "wal",
            "synchronous": 1,
            "busy_timeout": settings["busy_timeout"],
            "foreign_keys": 1,
            "query_only": 1,
        }


def test_migrations_run_once(db_path):
    first = Store(db_path)
    assert first.migrate_app("demo", [ITEMS]) == 1
    first.close()
    again = Store(db_path)
    assert again.migrate_app("demo", [ITEMS]) == 0
    assert again.migrate_app("demo", [ITEMS, AUDIT]) == 1
    again.close()

    assert inspect(db_path, "PRAGMA user_version") == [(len(CORE_MIGRATIONS),)]
    assert inspect(db_path, "SELECT app, number, name FROM _app_migrations ORDER BY number") == [
        ("demo", 1, "items"),
        ("demo", 2, "audit"),
    ]


def test_a_database_from_a_newer_voicestack_is_refused(db_path):
    Store(db_path).close()
    conn = apsw.Connection(str(db_path))
    conn.execute(f"PRAGMA user_version = {len(CORE_MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this voicestack"):
        Store(db_path)


def test_one_failing_mutation_in_a_group_commit_rolls_back_alone(store, changesets):
    hold = WriterHold(store)

    def fail(db):
        db.execute("INSERT INTO items(name) VALUES ('doomed')")
        db.execute("INSERT INTO audit(note) VALUES ('doomed')")
        raise ValueError("refused")

    jobs = [insert("a"), insert("b"), fail, insert("c")]
    futures: list = [None] * len(jobs)

    def submit(i):
        futures[i] = store.writer.submit(jobs[i])

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hold.release()  # every job is queued: they share the next transaction

    with pytest.raises(ValueError, match="refused"):
        futures[2].result(10)
    good = [futures[i].result(10) for i in (0, 1, 3)]
    assert len({result.version for result in good}) == 1
    version = good[0].version
    assert sorted(names(store)) == ["a", "b", "c"]
    assert store.read_sync(lambda s: s.db().all("SELECT * FROM audit")) == []
    ids = {result.value for result in good}
    assert len(changesets) == 1
    assert (changesets[0].version, changesets[0].tables, changesets[0].rows) == (
        version,
        frozenset({"items"}),
        {"items": frozenset(ids)},
    )


@pytest.mark.anyio
async def test_tasks_writing_together_are_told_after_their_one_commit(store, changesets):
    hold = WriterHold(store)

    def fail(db):
        db.execute("INSERT INTO items(name) VALUES ('doomed')")
        raise ValueError("refused")

    def stop(db):  # a future refuses StopIteration itself: the others must still be told
        db.execute("INSERT INTO items(name) VALUES ('stopped')")
        return next(iter(()))

    tasks = [asyncio.ensure_future(store.write(insert(name))) for name in ("a", "b")]
    tasks.append(asyncio.ensure_future(store.write(fail)))
    tasks.append(asyncio.ensure_future(store.write(stop)))
    tasks.append(asyncio.ensure_future(store.write(insert("c"))))
    await asyncio.sleep(0)  # every task has queued its write
    hold.release()

    with anyio.fail_after(5):
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], ValueError)
    assert isinstance(results[3], RuntimeError)
    good = [results[i] for i in (0, 1, 4)]
    assert len({result.version for result in good}) == 1
    assert changesets[-1].version == good[0].version
    assert sorted(names(store)) == ["a", "b", "c"]


@pytest.mark.anyio
async def test_a_write_given_up_before_its_turn_never_runs(store):
    hold = WriterHold(store)
    ran: list[str] = []

    def given_up(db):
        ran.append("given up")
        db.execute("INSERT INTO items(name) VALUES ('given up')")

    abandoned = asyncio.ensure_future(store.write(given_up))
    kept = asyncio.ensure_future(store.write(insert("kept")))
    await asyncio.sleep(0)
    abandoned.cancel()
    await asyncio.sleep(0)
    hold.release()

    assert (await kept).version > 0
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    assert ran == []
    assert names(store) == ["kept"]


def test_a_statement_that_rolls_back_the_transaction_costs_only_its_mutation(store):
    store.write_sync(insert("taken"))
    hold = WriterHold(store)
    before = store.writer.submit(insert("before"))
    rollback = store.writer.submit(
        lambda db: db.execute("INSERT OR ROLLBACK INTO items(id, name) VALUES (1, 'clash')")
    )
    after = store.writer.submit(insert("after"))
    hold.release()

    with pytest.raises(apsw.ConstraintError):
        rollback.result(10)
    assert before.result(10).version == after.result(10).version
    assert names(store) == ["taken", "before", "after"]


def test_versions_increase_and_survive_reopening(db_path):
    store = open_store(db_path)
    versions = [store.write_sync(insert(n)).version for n in ("a", "b", "c")]
    assert versions == [1, 2, 3]
    assert store.version() == 3
    store.close()

    store = open_store(db_path)
    try:
        assert store.version() == 3
        assert store.write_sync(insert("d")).version == 4
    finally:
        store.close()


def test_a_commit_without_changes_keeps_the_version(store, changesets):
    store.write_sync(insert("a"))
    result = store.write_sync(lambda db: db.execute("UPDATE items SET name = 'x' WHERE id = 99"))
    assert (result.value.changes, result.version) == (0, 1)
    assert [cs.version for cs in changesets] == [1]


def test_every_commit_is_logged_in_changes(store, db_path):
    store.write_sync(insert("a"))
    store.write_sync(lambda db: db.execute("INSERT INTO audit(note) VALUES ('n')"))
    store.write_sync(lambda db: db.execute("UPDATE items SET name = 'b' WHERE id = 1"))
    store.write_sync(lambda db: db.execute("DELETE FROM audit"))

    logged = inspect(db_path, "SELECT version, tables, rows FROM _changes ORDER BY version")
    # Beside each table's rowids: the tables in which a row was deleted.
    assert [(v, json.loads(t), json.loads(r)) for v, t, r in logged] == [
        (1, ["items"], {"items": [1], "$deleted": []}),
        (2, ["audit"], {"audit": [1], "$deleted": []}),
        (3, ["items"], {"items": [1], "$deleted": []}),
        (4, ["audit"], {"audit": [1], "$deleted": ["audit"]}),
    ]


def test_delete_without_where_reports_every_row(store, changesets):
    inserted = store.write_sync(
        lambda db: db.executemany("INSERT INTO items(name) VALUES (?)", [("a",), ("b",), ("c",)])
    )
    deleted = store.write_sync(lambda db: db.execute("DELETE FROM items").changes)

    assert deleted.value == 3
    assert names(store) == []
    assert [(cs.version, cs.tables, cs.rows) for cs in changesets] == [
        (inserted.version, frozenset({"items"}), {"items": frozenset({1, 2, 3})}),
        (deleted.version, frozenset({"items"}), {"items": frozenset({1, 2, 3})}),
    ]


def test_a_reader_refuses_to_write(store):
    def try_writes(snapshot):
        refused = []
        for run in (
            lambda: snapshot.db().all("INSERT INTO items(name) VALUES ('x')"),
            lambda: snapshot.conn.execute("DELETE FROM items"),
            lambda: snapshot.conn.execute("CREATE TABLE sneaky (x)"),
        ):
            with pytest.raises(apsw.AuthError):
                run()
            refused.append(True)
        return refused

    store.write_sync(insert("a"))
    assert store.read_sync(try_writes) == [True, True, True]
    assert names(store) == ["a"]


def test_read_set_is_known_for_a_cached_statement(store):
    sql = "SELECT items.name, audit.note FROM items JOIN audit ON audit.id = items.id"

    def read_twice(snapshot):
        first, second = snapshot.db(), snapshot.db()
        first.all(sql)
        second.all(sql)
        untouched = snapshot.db()
        untouched.all("SELECT 1")
        return first.tables_read, second.tables_read, untouched.tables_read

    assert store.read_sync(read_twice) == ({"items", "audit"}, {"items", "audit"}, set())


def test_read_set_is_kept_when_a_statement_fails(store):
    # json_extract fails at run time on a malformed row, after the statement was prepared.
    sql = "SELECT json_extract(name, '$') AS parsed FROM items"
    store.write_sync(insert("not json {"))

    def read_failing(snapshot):
        db = snapshot.db()
        with pytest.raises(apsw.SQLError, match="malformed JSON"):
            db.all(sql)
        return db.tables_read

    def read_fixed(snapshot):
        db = snapshot.db()
        return db.all(sql), db.tables_read

    reader = store.reader()  # one connection, so the second run reuses the prepared statement
    try:
        assert reader.read(read_failing) == {"items"}
        store.write_sync(lambda db: db.execute("UPDATE items SET name = '[1]'"))
        assert reader.read(read_fixed) == ([{"parsed": "[1]"}], {"items"})
    finally:
        reader.close()


def test_readers_see_one_snapshot_per_read(store):
    store.write_sync(insert("a"))

    def read_around_a_commit(snapshot):
        before = snapshot.db().all("SELECT name FROM items")
        store.writer.submit(insert("b")).result(10)
        after = snapshot.db().all("SELECT name FROM items")
        return snapshot.version, before, after

    assert store.read_sync(read_around_a_commit) == (1, [{"name": "a"}], [{"name": "a"}])
    assert store.version() == 2
