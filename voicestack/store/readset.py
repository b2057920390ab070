"""Which tables a query reads, learned from the apsw authorizer as its statements are prepared."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import apsw

Params = Sequence[Any] | dict[str, Any]

_WRITE_ACTIONS = frozenset(
    {
        apsw.SQLITE_INSERT,
        apsw.SQLITE_UPDATE,
        apsw.SQLITE_DELETE,
        apsw.SQLITE_CREATE_TABLE,
        apsw.SQLITE_DROP_TABLE,
        apsw.SQLITE_ALTER_TABLE,
        apsw.SQLITE_CREATE_INDEX,
        apsw.SQLITE_DROP_INDEX,
        apsw.SQLITE_CREATE_TRIGGER,
        apsw.SQLITE_DROP_TRIGGER,
        apsw.SQLITE_CREATE_VIEW,
        apsw.SQLITE_DROP_VIEW,
        apsw.SQLITE_ATTACH,
        apsw.SQLITE_DETACH,
    }
)


class StatementTables:
    """Learns, per SQL text, which tables a statement reads, through the apsw authorizer.

    The authorizer only runs when a statement is prepared, and apsw caches prepared statements,
    so the tables are remembered per SQL text the first time it is prepared on this connection.
    It also refuses any statement that would write: queries are read-only by contract.
    """

    def __init__(self, conn: apsw.Connection) -> None:
        self._by_sql: dict[str, frozenset[str]] = {}
        self._preparing: set[str] | None = None
        conn.authorizer = self._authorize

    def _authorize(
        self, op: int, arg1: str | None, _arg2: str | None, _db: str | None, _trigger: str | None
    ) -> int:
        if op in _WRITE_ACTIONS:
            return apsw.SQLITE_DENY
        if op == apsw.SQLITE_READ and arg1 and self._preparing is not None:
            self._preparing.add(arg1)
        return apsw.SQLITE_OK

    def execute(
        self,
        conn: apsw.Connection,
        sql: str,
        params: Params,
        fetch: Callable[[apsw.Cursor], list[dict[str, Any]]],
        read: set[str],
    ) -> list[dict[str, Any]]:
        """Run `sql` and return its rows, adding the tables it reads to `read`.

        The tables are added even when the statement fails while running (a malformed JSON
        value, say): the query depends on them, and a later change may make it succeed.
        """
        known = self._by_sql.get(sql)
        if known is not None:
            read |= known
            return fetch(conn.execute(sql, params))
        self._preparing = set()
        try:
            return fetch(conn.execute(sql, params))
        finally:
            tables = frozenset(self._preparing)
            self._preparing = None
            read |= tables
            if tables:
                self._by_sql[sql] = tables
