"""A lone mutation runs without a savepoint, so however many pages it changes SQLite keeps no
rollback copies of them and creates no temporary file for them; a lone mutation that fails
still leaves nothing behind."""

from __future__ import annotations

import contextlib
import os

import apsw
import pytest

from tests.support.store import insert, names
from voicestack.store import ChangeSet, Store
from voicestack.store.db import WriteDB

PAGE_ROW = 3000  # characters: one row fills most of a 4 KiB page, so each row is a page of its own
ROWS = 340  # pages: a savepoint would copy about 1.4 MB of them, past SQLite's 64 KiB in memory


def _deleted_files() -> set[str]:
    """The files this process holds open that have no name any more (SQLite opens its
    temporary files that way)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)") and not target.startswith("/memfd:"):
            found.add(target)
    return found


def _fill(store: Store) -> list[int]:
    def fill(db: WriteDB) -> list[int]:
        return [insert(f"{i:04d}".ljust(PAGE_ROW, "x"))(db) for i in range(ROWS)]

    return store.write_sync(fill).value


def _rewrite(ids: list[int], tag: str):
    """A mutation that changes each row in a statement of its own (each statement's copies are
    dropped when it ends) and returns the temporary files that appeared meanwhile."""

    def rewrite(db: WriteDB) -> set[str]:
        before = _deleted_files()
        for row_id in ids:
            db.execute("UPDATE items SET name = ? || substr(name, 2) WHERE id = ?", (tag, row_id))
        return _deleted_files() - before

    return rewrite


def test_a_lone_mutation_changing_many_pages_makes_no_temporary_file(store):
    ids = _fill(store)
    assert store.write_sync(_rewrite(ids, "a")).value == set()
    assert {name[0] for name in names(store)} == {"a"}


def test_a_lone_mutation_that_raises_leaves_nothing_and_publishes_nothing(store):
    seen: list[ChangeSet] = []
    store.add_commit_listener(seen.append)
    assert store.write_sync(insert("kept")).version == 1

    def fail(db: WriteDB) -> None:
        db.execute("INSERT INTO items(name) VALUES ('doomed')")
        db.execute("INSERT INTO audit(note) VALUES ('doomed')")
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        store.write_sync(fail)
    assert names(store) == ["kept"]
    assert store.read_sync(lambda s: s.db().all("SELECT * FROM audit")) == []
    assert store.write_sync(insert("next")).version == 2
    assert names(store) == ["kept", "next"]
    assert [changeset.version for changeset in seen] == [1, 2]


def test_a_lone_mutation_that_ends_its_own_transaction_fails_and_logs_nothing(store):
    seen: list[ChangeSet] = []
    store.add_commit_listener(seen.append)
    store.write_sync(insert("taken"))

    def clash_and_carry_on(db: WriteDB) -> str:
        db.execute("INSERT INTO items(name) VALUES ('doomed')")
        with contextlib.suppress(apsw.ConstraintError):  # the whole transaction rolls back
            db.execute("INSERT OR ROLLBACK INTO items(id, name) VALUES (1, 'clash')")
        return "carried on"

    with pytest.raises(RuntimeError, match="ended its own transaction"):
        store.write_sync(clash_and_carry_on)
    assert names(store) == ["taken"]
    logged = store.read_sync(lambda s: s.db().all("SELECT version FROM _changes"))
    assert [row["version"] for row in logged] == [1]
    assert store.write_sync(insert("next")).version == 2
    assert [changeset.version for changeset in seen] == [1, 2]


@pytest.mark.anyio
async def test_a_lone_mutation_that_raises_on_the_loop_leaves_nothing(store):
    await store.write(insert("kept"), on_loop=True)

    def fail(db: WriteDB) -> None:
        db.execute("INSERT INTO items(name) VALUES ('doomed')")
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        await store.write(fail, on_loop=True)
    assert (await store.write(insert("after"), on_loop=True)).version == 2
    assert names(store) == ["kept", "after"]
    assert store.writer.stats.on_loop == 3  # all three were committed on the loop
