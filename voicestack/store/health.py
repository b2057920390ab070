"""A database's health: SQLite's integrity check and how far its migrations have come."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from voicestack.store.backup import open_source
from voicestack.store.migrations import Migration, core_level
from voicestack.store.store import integrity_check


class DatabaseUnreadable(Exception):
    """The file could not be opened or read as a voicestack database."""


@dataclass
class SchemaReport:
    """A database's health: integrity check lines, core migration level against the core
    migrations this voicestack knows, app migrations."""

    integrity: list[str]
    level: int
    migrations: Sequence[Migration]
    apps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def known(self) -> int:
        """How many core migrations this voicestack knows."""
        return len(self.migrations)

    @property
    def pending(self) -> list[str]:
        """Names of the core migrations this database has not had yet."""
        return [m.name for m in self.migrations[self.level :]]

    def problems(self) -> list[str]:
        """What is wrong, one phrase each (empty when the database is ok)."""
        found = []
        if self.integrity != ["ok"]:
            found.append(f"the integrity check found {len(self.integrity)} problem(s)")
        if self.level > self.known:
            found.append(
                f"its schema level {self.level} is newer than this voicestack's {self.known}"
            )
        elif self.pending:
            count = len(self.pending)
            found.append(f"{count} core migration(s) pending: run `voicestack db migrate`")
        return found

    def as_json(self) -> dict[str, Any]:
        """The report for `--json`."""
        return {
            "ok": not self.problems(),
            "integrity": self.integrity,
            "coreLevel": self.level,
            "coreKnown": self.known,
            "pending": self.pending,
            "apps": self.apps,
            "problems": self.problems(),
        }


def _app_migrations(conn: apsw.Connection) -> list[dict[str, Any]]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_app_migrations'"
    ).fetchall()
    if not exists:
        return []
    rows = conn.execute(
        "SELECT app, count(*), max(number),"
        " (SELECT name FROM _app_migrations l WHERE l.app = a.app ORDER BY number DESC LIMIT 1)"
        " FROM _app_migrations a GROUP BY app ORDER BY app"
    ).fetchall()
    return [{"app": a, "migrations": n, "level": top, "last": last} for a, n, top, last in rows]


def inspect_database(db: Path, migrations: Sequence[Migration]) -> SchemaReport:
    """Run the integrity check and read the migration levels of the database at `db`, whose
    core schema is `migrations` (voicestack.schema.ALL_MIGRATIONS for a server's)."""
    try:
        conn = open_source(db)
    except (apsw.Error, FileNotFoundError) as exc:
        raise DatabaseUnreadable(f"Cannot open {db}: {exc}") from None
    try:
        level = core_level(conn)
        apps = _app_migrations(conn)
        try:
            integrity = integrity_check(conn)
        except apsw.CorruptError as exc:  # too damaged for the check to finish
            integrity = [str(exc)]
        return SchemaReport(integrity, level, migrations, apps=apps)
    except apsw.NotADBError:
        raise DatabaseUnreadable(f"{db} is not a SQLite database.") from None
    except apsw.Error as exc:
        raise DatabaseUnreadable(f"Cannot read {db}: {exc}") from None
    finally:
        conn.close()
