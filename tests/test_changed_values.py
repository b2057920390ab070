"""Which rows a commit changed, as the access guard reads them (changed_values): known for rows
inserted or updated, unknown once a row of the table was deleted (its rowid may be reused by
the next insert, so the row found under it may be another's), in process and through the
change log that other processes read."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from voicestack.auth.users import create_token
from voicestack.runtime import Runtime
from voicestack.store.changes import ChangeSet, changed_values, read_log
from voicestack.store.db import WriteDB

pytestmark = pytest.mark.anyio


async def _commit(rt: Runtime, seen: list[ChangeSet], fn: object) -> ChangeSet:
    before = len(seen)
    await rt.store.write(fn)  # type: ignore[arg-type]
    assert len(seen) == before + 1
    return seen[-1]


async def _values(rt: Runtime, changes: list[ChangeSet]) -> frozenset[str] | None:
    return await rt.store.read(
        lambda snapshot: changed_values(snapshot.db(), changes, "auth_tokens", "id")
    )


async def test_inserted_rows_are_known_and_a_deleted_one_makes_them_unknown(
    rt: Runtime, tmp_path: Path
) -> None:
    seen: list[ChangeSet] = []
    rt.store.add_commit_listener(seen.append)
    added = await _commit(rt, seen, lambda db: create_token(db, "ana")[1].id)

    def swap(db: WriteDB) -> None:
        # The newest row goes, and the next insert takes its rowid: SQLite reuses the largest.
        db.execute("DELETE FROM auth_tokens WHERE rowid = (SELECT max(rowid) FROM auth_tokens)")
        create_token(db, "bob")

    swapped = await _commit(rt, seen, swap)

    assert added.deleted == frozenset()
    assert swapped.deleted == frozenset({"auth_tokens"})
    # Read now, ana's insert alone would name bob's token (the rowid was reused): a batch that
    # holds the deletion is unknown instead.
    assert await _values(rt, [added, swapped]) is None
    assert await _values(rt, [swapped]) is None
    inserted = await _commit(rt, seen, lambda db: create_token(db, "cy")[1].id)
    cy = await rt.store.read(
        lambda snapshot: snapshot.db().scalar(
            "SELECT id FROM auth_tokens WHERE user_id ="
            " (SELECT id FROM auth_users WHERE name = 'cy')"
        )
    )
    assert await _values(rt, [inserted]) == frozenset({cy})

    conn = apsw.Connection(str(rt.settings.db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        logged = {cs.version: cs for cs in read_log(conn, added.version - 1)}
    finally:
        conn.close()
    assert logged[swapped.version].deleted == frozenset({"auth_tokens"})
    assert logged[inserted.version].deleted == frozenset()
    assert logged[inserted.version].rows["auth_tokens"] == inserted.rows["auth_tokens"]


def test_a_commit_logged_without_deletions_is_taken_to_have_any() -> None:
    older = ChangeSet(7, frozenset({"auth_tokens"}), {"auth_tokens": frozenset({3})})
    assert older.deleted is None
    assert changed_values(None, [older], "auth_tokens", "id") is None  # type: ignore[arg-type]
