"""The writer's transactions keep their rollback copies in memory: a mutation that changes many
pages creates no temporary file, alone or in a group commit, and a lone mutation that raises
still leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.store import WriterHold, insert, names, open_store
from voicestack.store import ChangeSet, Store
from voicestack.store.db import WriteDB

ROWS = 200
ROW_BYTES = 1000  # 200 rows of 1 KB: about 50 pages, far past SQLite's 64 KiB spill


@pytest.fixture
def store(tmp_path: Path):
    store = open_store(tmp_path / "store.db")
    yield store
    store.close()


def _deleted_files() -> set[str]:
    """The files this process holds open that have no name any more (SQLite's temporary
    files are opened that way)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)") and not target.startswith("/memfd:"):
            found.add(target)
    return found


def _rewrite_every_row(tag: str):
    """A mutation that changes every existing page of `items` and returns the temporary files
    it made appear."""

    def rewrite(db: WriteDB) -> set[str]:
        before = _deleted_files()
        db.execute("UPDATE items SET name = ? || substr(name, 2)", (tag,))
        return _deleted_files() - before

    return rewrite


def _fill(store: Store) -> None:
    def fill(db: WriteDB) -> None:
        for i in range(ROWS):
            db.execute("INSERT INTO items(name) VALUES (?)", (f"{i:04d}".ljust(ROW_BYTES, "x"),))

    store.write_sync(fill)


def test_a_lone_mutation_changing_many_pages_makes_no_temporary_file(store):
    _fill(store)
    assert store.write_sync(_rewrite_every_row("a")).value == set()
    assert {name[0] for name in names(store)} == {"a"}


def test_a_group_commit_changing_many_pages_makes_no_temporary_file(store):
    _fill(store)
    hold = WriterHold(store)
    first = store.writer.submit(_rewrite_every_row("b"))
    second = store.writer.submit(_rewrite_every_row("c"))
    hold.release()  # both are queued: they share one transaction, each in its savepoint
    assert first.result(10).value == set()
    assert second.result(10).value == set()
    assert first.result(10).version == second.result(10).version
    assert {name[0] for name in names(store)} == {"c"}


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
    assert [changeset.version for changeset in seen] == [1]
    assert store.write_sync(insert("next")).version == 2
    assert names(store) == ["kept", "next"]
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
