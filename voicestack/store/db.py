"""The database handles server functions receive: ReadDB for queries, WriteDB for mutations.

Rows come back as dicts keyed by column name. A ReadDB records every table its statements read,
which is how a subscription learns what it depends on without declaring it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import apsw

from voicestack.store.readset import StatementTables

Params = Sequence[Any] | dict[str, Any]
Row = dict[str, Any]


def fetch_rows(cursor: apsw.Cursor) -> list[dict[str, Any]]:
    """The cursor's remaining rows as dicts keyed by column name."""
    try:
        names = [d[0] for d in cursor.get_description()]
    except apsw.ExecutionCompleteError:
        return []
    return [dict(zip(names, row, strict=True)) for row in cursor]


class RowQueries(ABC):
    """`one` and `scalar`, answered from the rows of a subclass's `all`."""

    @abstractmethod
    def all(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row `sql` returns, as dicts."""

    def one(self, sql: str, params: Params = ()) -> Row | None:
        """The first row `sql` returns, or None."""
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row, or None when there is no row."""
        row = self.one(sql, params)
        return next(iter(row.values())) if row else None


class ReadDB(RowQueries):
    """Read-only access for a query, recording the tables it reads."""

    def __init__(self, conn: apsw.Connection, statements: StatementTables) -> None:
        self._conn = conn
        self._statements = statements
        self.tables_read: set[str] = set()

    def all(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row `sql` returns, as dicts."""
        return self._statements.execute(self._conn, sql, params, fetch_rows, self.tables_read)


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What a write statement did: rows changed and the last inserted rowid."""

    changes: int
    last_rowid: int


# Keeps a value with a row just inserted, for the commit's listeners: (table, rowid, value).
Remember = Callable[[str, int, Any], None]


class WriteDB(RowQueries):
    """Read-write access for a mutation, inside the group commit's transaction (in a savepoint of
    its own when the batch has others)."""

    def __init__(self, conn: apsw.Connection, remember: Remember | None = None) -> None:
        self._conn = conn
        self._remember = remember

    def remember(self, table: str, rowid: int, value: Any) -> None:
        """Hand `value` over with the row `rowid` this mutation just inserted in `table`: the
        commit's listeners in this process find it in ChangeSet.remembered instead of reading
        the row (unless the row changes again in the same commit). A no-op outside the writer."""
        if self._remember is not None:
            self._remember(table, rowid, value)

    def all(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row `sql` returns, as dicts (reads see this transaction's own writes)."""
        return fetch_rows(self._conn.execute(sql, params))

    def execute(self, sql: str, params: Params = ()) -> ExecResult:
        """Run one write statement; returns rows changed and the last inserted rowid."""
        self._conn.execute(sql, params)
        return ExecResult(self._conn.changes(), self._conn.last_insert_rowid())

    def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        """Run `sql` once per parameter set; returns the total rows changed."""
        before = self._conn.total_changes()
        self._conn.executemany(sql, rows)
        return self._conn.total_changes() - before
