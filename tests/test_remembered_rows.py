"""Values a mutation hands over with the rows it inserts (WriteDB.remember) reach the commit's
listeners in ChangeSet.remembered, and only while they are still what the rows hold: a rolled
back mutation's go with it, a row changed or deleted after is not told from memory, and a commit
another process made (read from the log) tells nothing from memory."""

from __future__ import annotations

import concurrent.futures

import apsw

from tests.support.store import WriterHold
from voicestack.store import ChangeSet, Store
from voicestack.store.changes import read_log
from voicestack.store.db import WriteDB


def _insert_remembered(name: str):
    def insert(db: WriteDB) -> int:
        rowid = db.execute("INSERT INTO items(name) VALUES (?)", (name,)).last_rowid
        db.remember("items", rowid, name)
        return rowid

    return insert


def _committed(store: Store, *mutations) -> ChangeSet:
    seen: list[ChangeSet] = []
    store.add_commit_listener(seen.append)
    for mutation in mutations:
        store.write_sync(mutation)
    assert len(seen) == 1
    return seen[0]


def test_a_commit_hands_over_what_its_inserts_remembered(store):
    def two(db: WriteDB) -> None:
        _insert_remembered("a")(db)
        _insert_remembered("b")(db)

    changeset = _committed(store, two)
    assert sorted(changeset.remembered_rows("items").values()) == ["a", "b"]
    assert changeset.remembered_rows("audit") == {}  # a table the commit did not change


def test_a_row_changed_or_deleted_after_its_insert_is_not_told_from_memory(store):
    def insert_then_update(db: WriteDB) -> None:
        rowid = _insert_remembered("a")(db)
        db.execute("UPDATE items SET name = 'changed' WHERE id = ?", (rowid,))

    assert _committed(store, insert_then_update).remembered_rows("items") is None

    def insert_then_delete(db: WriteDB) -> None:
        _insert_remembered("keep")(db)
        rowid = _insert_remembered("gone")(db)
        db.execute("DELETE FROM items WHERE id = ?", (rowid,))

    assert _committed(store, insert_then_delete).remembered_rows("items") is None


def test_an_insert_that_remembers_nothing_makes_the_table_unknown(store):
    def mixed(db: WriteDB) -> None:
        _insert_remembered("told")(db)
        db.execute("INSERT INTO items(name) VALUES ('untold')")

    assert _committed(store, mixed).remembered_rows("items") is None


def _fails(db: WriteDB) -> None:
    _insert_remembered("rolled back")(db)
    raise RuntimeError("no")


def _one_batch(store: Store, *mutations) -> tuple[ChangeSet, list]:
    """Commit `mutations` in one batch (queued while the writer is held): its ChangeSet, and
    each mutation's future."""
    seen: list[ChangeSet] = []
    store.add_commit_listener(seen.append)
    hold = WriterHold(store)
    futures = [store.writer.submit(mutation) for mutation in mutations]
    hold.release()
    concurrent.futures.wait(futures, 10)
    (changeset,) = seen
    return changeset, futures


def test_a_rolled_back_mutation_of_a_batch_takes_its_memories_with_it(store):
    def updates_the_first(db: WriteDB) -> None:
        db.execute("UPDATE items SET name = 'x' WHERE name = 'first'")
        raise RuntimeError("rolled back too")

    changeset, futures = _one_batch(
        store, _insert_remembered("first"), _fails, updates_the_first, _insert_remembered("last")
    )
    assert changeset.version == futures[0].result().version
    # The rolled-back update forgot "first" from memory: the commit does not tell it.
    assert changeset.remembered_rows("items") is None
    assert sorted(changeset.remembered["items"].values()) == ["last"]


def test_a_batch_keeps_the_memories_of_the_mutations_that_succeeded(store):
    changeset, _ = _one_batch(store, _insert_remembered("a"), _fails, _insert_remembered("b"))
    assert sorted(changeset.remembered_rows("items").values()) == ["a", "b"]


def test_a_commit_read_from_the_log_tells_nothing_from_memory(store, tmp_path):
    version = store.write_sync(_insert_remembered("a")).version
    conn = apsw.Connection(str(tmp_path / "store.db"))
    try:
        (logged,) = read_log(conn, version - 1, version)
    finally:
        conn.close()
    assert logged.remembered_rows("items") is None


def test_a_batch_remembering_more_rows_than_it_lists_keeps_none_of_them(store):
    def many(first: int):
        def insert(db: WriteDB) -> None:
            for i in range(first, first + 600):
                _insert_remembered(f"row {i}")(db)

        return insert

    changeset, _ = _one_batch(store, many(0), many(600))
    assert changeset.remembered_rows("items") is None  # 1,200 rows: not listed one by one
    assert changeset.remembered["items"] == {}
