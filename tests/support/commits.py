"""Which commit wrote which row, as the database file's `_changes` log tells it."""

from __future__ import annotations

import json
from pathlib import Path

import apsw

from voicestack.auth.users import token_hash


def row_versions(db_path: Path, table: str, after: int = 0) -> dict[int, int]:
    """rowid -> the version of the newest logged commit after `after` that changed that row of
    `table` (a thread event's rowid is its event id)."""
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        versions: dict[int, int] = {}
        for version, rows in conn.execute(
            "SELECT version, rows FROM _changes WHERE version > ? ORDER BY version", (after,)
        ):
            for rowid in json.loads(rows).get(table, []):
                versions[rowid] = version
        return versions
    finally:
        conn.close()


def token_rowid(db_path: Path, token: str) -> int:
    """The rowid of `token`'s row in `auth_tokens`."""
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute(
            "SELECT rowid FROM auth_tokens WHERE hash = ?", (token_hash(token),)
        ).fetchall()
        assert len(rows) == 1, rows
        return int(rows[0][0])
    finally:
        conn.close()
