"""What a commit changed: the ChangeSet, the recorder fed by apsw hooks, and the `_changes` log."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import apsw

from voicestack.store.db import ReadDB

# Tables whose changes are bookkeeping, never data a query should react to: our own change log
# and migration records, Litestream's tables, SQLite's internals.
IGNORED_PREFIXES = ("_", "sqlite_")

# Past this many rows in one table, a commit records the table alone: readers treat it as
# "anything in the table may have changed", and the log row stays small.
MAX_ROWS_PER_TABLE = 1000


def is_tracked_table(table: str) -> bool:
    """True when changes to `table` must reach subscriptions."""
    return not table.startswith(IGNORED_PREFIXES)


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """The tables and rows one commit changed, with the commit's version."""

    version: int
    tables: frozenset[str]
    # table -> rowids changed; a table missing here (but in `tables`) changed in unknown rows.
    rows: dict[str, frozenset[int]] = field(default_factory=dict)
    committed_at: float = 0.0
    # The tables in which a row was deleted (a rowid in `rows` may since be another row's);
    # None: not known, take it for any.
    deleted: frozenset[str] | None = None
    # table -> rowid -> the value the mutation that inserted the row handed over with it
    # (WriteDB.remember), kept in the committing process's memory; empty in a logged commit.
    remembered: dict[str, dict[int, Any]] = field(default_factory=dict)

    def touches(self, tables: frozenset[str] | set[str]) -> bool:
        """True when this commit changed any of `tables`."""
        return not self.tables.isdisjoint(tables)

    def remembered_rows(self, table: str) -> dict[int, Any] | None:
        """The remembered value of every row this commit changed in `table` (empty when it
        changed none), or None when some row's is not known: not remembered, changed again
        after, deleted, or the commit is another process's."""
        if table not in self.tables:
            return {}
        rows = self.rows.get(table)
        memo = self.remembered.get(table)
        if rows is None or memo is None or self.deleted is None or table in self.deleted:
            return None
        return memo if memo.keys() == rows else None


def remembered_rows(changes: list[ChangeSet], table: str) -> dict[int, Any] | None:
    """The remembered value of every row `changes` changed in `table`, or None when some
    commit's are not all known (ChangeSet.remembered_rows)."""
    rows: dict[int, Any] = {}
    for changeset in changes:
        remembered = changeset.remembered_rows(table)
        if remembered is None:
            return None
        rows.update(remembered)
    return rows


class ChangeRecorder:
    """Collects (table, rowid) from the writer's update hook, one mutation at a time.

    A mutation's changes are kept only once it succeeded (its savepoint, if any, released); a
    rolled-back mutation's changes are discarded, because the update hook also fires for rows that
    are later rolled back. So are the values its inserts handed over (`remember`).
    """

    def __init__(self) -> None:
        self._committed: dict[str, set[int] | None] = {}
        self._current: dict[str, set[int] | None] = {}
        self._deleted: set[str] = set()
        self._deleted_now: set[str] = set()
        self._memos = _Memos()

    def remember(self, table: str, rowid: int, value: Any) -> None:
        """Keep `value` with the row `rowid` the running mutation just inserted in `table`, for
        the commit listeners (ChangeSet.remembered)."""
        self._memos.add(table, rowid, value)

    def on_update(self, op: int, _db: str, table: str, rowid: int) -> None:
        """apsw update hook: remember one changed row of the running mutation."""
        if not is_tracked_table(table):
            return
        if op == apsw.SQLITE_DELETE:
            self._deleted_now.add(table)
        if op != apsw.SQLITE_INSERT:
            self._memos.forget(table, rowid)  # its value is no longer the one handed over
        rows = self._current.get(table, set())
        if rows is None:
            return
        rows.add(rowid)
        if len(rows) > MAX_ROWS_PER_TABLE:
            self._current[table] = None
        else:
            self._current[table] = rows

    def keep_current(self) -> None:
        """The running mutation succeeded: fold its changes into the transaction's."""
        for table, rows in self._current.items():
            if table in self._committed:
                known = self._committed[table]
                if known is None or rows is None:
                    self._committed[table] = None
                else:
                    known |= rows
                    if len(known) > MAX_ROWS_PER_TABLE:
                        self._committed[table] = None
            else:
                self._committed[table] = rows
        self._current = {}
        self._deleted |= self._deleted_now
        self._deleted_now = set()
        self._memos.keep_current()

    def discard_current(self) -> None:
        """The running mutation rolled back: forget what it changed."""
        self._current = {}
        self._deleted_now = set()
        self._memos.discard_current()

    def reset(self) -> None:
        """Forget everything: the whole transaction rolled back."""
        self._committed = {}
        self._current = {}
        self._deleted = set()
        self._deleted_now = set()
        self._memos = _Memos()

    @property
    def has_changes(self) -> bool:
        """True when the kept mutations changed at least one tracked row."""
        return bool(self._committed)

    def to_changeset(self, version: int) -> ChangeSet:
        """The kept changes as a ChangeSet for `version`; the recorder is left empty."""
        rows = {t: frozenset(r) for t, r in self._committed.items() if r is not None}
        deleted = frozenset(self._deleted)
        remembered = self._memos.committed
        changeset = ChangeSet(
            version, frozenset(self._committed), rows, time.time(), deleted, remembered
        )
        self.reset()
        return changeset


class _Memos:
    """The values inserts handed over, a mutation at a time like the recorder's rows. A table's
    are dropped once they pass MAX_ROWS_PER_TABLE: its rows are not listed then either, so
    nothing could be told from them."""

    def __init__(self) -> None:
        self.committed: dict[str, dict[int, Any]] = {}
        self._current: dict[str, dict[int, Any]] = {}

    def add(self, table: str, rowid: int, value: Any) -> None:
        memo = self._current.setdefault(table, {})
        if len(memo) < MAX_ROWS_PER_TABLE:
            memo[rowid] = value

    def forget(self, table: str, rowid: int) -> None:
        for memos in (self._current, self.committed):
            memo = memos.get(table)
            if memo is not None:
                memo.pop(rowid, None)

    def keep_current(self) -> None:
        for table, memo in self._current.items():
            kept = self.committed.setdefault(table, {})
            kept.update(memo)
            if len(kept) > MAX_ROWS_PER_TABLE:
                kept.clear()
        self._current = {}

    def discard_current(self) -> None:
        self._current = {}


# In a logged commit's rows, beside the tables' rowids: the tables in which a row was deleted
# (no table's name starts with `$`).
_DELETED_KEY = "$deleted"


def append_to_log(conn: apsw.Connection, changeset: ChangeSet) -> None:
    """Write `changeset` to the `_changes` log inside the current write transaction."""
    rows: dict[str, list[int] | list[str]] = {t: sorted(r) for t, r in changeset.rows.items()}
    if changeset.deleted is not None:
        rows[_DELETED_KEY] = sorted(changeset.deleted)
    conn.execute(
        "INSERT INTO _changes(version, tables, rows, committed_at) VALUES (?, ?, ?, ?)",
        (
            changeset.version,
            json.dumps(sorted(changeset.tables)),
            json.dumps(rows, separators=(",", ":")),
            changeset.committed_at,
        ),
    )


def latest_version(conn: apsw.Connection) -> int:
    """The newest committed version as seen by `conn`'s current snapshot (0 for a new database)."""
    # `.get` runs the statement to its end: outside a transaction, no read stays open after.
    version: int = conn.execute("SELECT coalesce(max(version), 0) FROM _changes").get
    return version


def read_log(conn: apsw.Connection, after: int, upto: int | None = None) -> list[ChangeSet]:
    """ChangeSets from the log with `after < version <= upto`, oldest first."""
    sql = "SELECT version, tables, rows, committed_at FROM _changes WHERE version > ?"
    params: tuple[int, ...] = (after,)
    if upto is not None:
        sql += " AND version <= ?"
        params = (after, upto)
    out = []
    for version, tables, rows, committed_at in conn.execute(sql + " ORDER BY version", params):
        logged = json.loads(rows)
        deleted = logged.pop(_DELETED_KEY, None)  # absent: logged by an older voicestack
        row_map = {t: frozenset(r) for t, r in logged.items()}
        known = frozenset(deleted) if deleted is not None else None
        changed = frozenset(json.loads(tables))
        out.append(ChangeSet(int(version), changed, row_map, committed_at, known))
    return out


def oldest_logged_version(conn: apsw.Connection) -> int:
    """The oldest version still in the log (0 when the log is empty)."""
    for (version,) in conn.execute("SELECT coalesce(min(version), 0) FROM _changes"):
        return int(version)
    return 0


def changed_since(conn: apsw.Connection, after: int, upto: int, tables: frozenset[str]) -> bool:
    """True when a commit in (after, upto] touched `tables`, or when the log no longer tells.

    Used to decide whether a reconnecting client that last saw version `after` already has the
    current value of a query that reads `tables`.
    """
    if after == upto:
        return False
    if after > upto:
        return True  # the client saw a version this database never had (a restored backup)
    oldest = oldest_logged_version(conn)
    if oldest == 0 or oldest > after + 1:
        return True
    return any(cs.touches(tables) for cs in read_log(conn, after, upto))


def prune_log(conn: apsw.Connection, newest: int, keep: int) -> None:
    """Drop log rows older than the newest `keep` versions (the newest row always stays)."""
    conn.execute("DELETE FROM _changes WHERE version <= ?", (newest - max(keep, 1),))


# More changed rows than this are not looked up one by one (a mass revocation, a bulk import):
# callers then take every row as changed.
CHANGED_ROWS_LIMIT = 500


def changed_values(
    db: ReadDB, changes: list[ChangeSet], table: str, column: str
) -> frozenset[str] | None:
    """`column` of each row of `table` that `changes` changed, read in `db`'s snapshot; None when
    that cannot be told: the rows were not recorded, there are over CHANGED_ROWS_LIMIT, or a row
    of the table was deleted (whose it was is gone, and its rowid may be another row's now)."""
    rowids: set[int] = set()
    for changeset in changes:
        if table not in changeset.tables:
            continue
        rows = changeset.rows.get(table)
        if rows is None or changeset.deleted is None or table in changeset.deleted:
            return None
        rowids |= rows
    if not rowids:
        return frozenset()
    if len(rowids) > CHANGED_ROWS_LIMIT:
        return None
    marks = ", ".join("?" * len(rowids))
    found = db.all(f"SELECT {column} FROM {table} WHERE rowid IN ({marks})", tuple(rowids))
    if len(found) != len(rowids):
        return None
    return frozenset(str(row[column]) for row in found)
