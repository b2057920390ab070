"""The writer's rollback copies stay in memory: a lone mutation runs without a savepoint, and a
group commit's savepoints keep up to 1 MiB of copies each in memory (SQLite's default is 64 KiB),
so neither makes SQLite create a temporary file. A lone mutation that fails still leaves
nothing behind."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import apsw
import pytest

from tests.support.store import WriterHold, insert, names, open_store
from voicestack.store import ChangeSet, Store
from voicestack.store.db import WriteDB
from voicestack.store.journal_spill import ROLLBACK_COPIES_IN_MEMORY_BYTES

PAGE_ROW = 3000  # characters: one row fills most of a 4 KiB page, so each row is a page of its own
ROWS = 340  # pages: about 1.4 MB of copies in all, 0.7 MB for each half


@pytest.fixture
def store(tmp_path: Path):
    store = open_store(tmp_path / "store.db")
    yield store
    store.close()


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


def test_a_lone_mutation_changing_more_than_a_savepoint_keeps_in_memory_makes_no_file(store):
    ids = _fill(store)
    # In a savepoint these copies would pass the in-memory limit.
    assert len(ids) * 4096 > ROLLBACK_COPIES_IN_MEMORY_BYTES
    assert store.write_sync(_rewrite(ids, "a")).value == set()
    assert {name[0] for name in names(store)} == {"a"}


def test_a_group_commit_keeps_each_savepoints_copies_in_memory(store):
    ids = _fill(store)
    half = len(ids) // 2  # each mutation's copies: over SQLite's default 64 KiB, under 1 MiB
    hold = WriterHold(store)
    first = store.writer.submit(_rewrite(ids[:half], "b"))
    second = store.writer.submit(_rewrite(ids[half:], "c"))
    hold.release()  # both are queued: they share one transaction, each in its savepoint
    assert first.result(10).value == set()
    assert second.result(10).value == set()
    assert first.result(10).version == second.result(10).version
    assert sorted({name[0] for name in names(store)}) == ["b", "c"]


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
