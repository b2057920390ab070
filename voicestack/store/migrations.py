"""Schema migrations: the core's numbered on `PRAGMA user_version`, each app's in `_app_migrations`.

Every migration says why it exists. They run once, in order, each in its own transaction, before
the writer thread starts, so no mutation ever sees a half-migrated schema.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import apsw

log = logging.getLogger(__name__)

MigrationStep = str | Callable[[apsw.Connection], None]


@dataclass(frozen=True)
class Migration:
    """One schema change: SQL (several statements allowed) or a function of the connection."""

    name: str
    step: MigrationStep

    def apply(self, conn: apsw.Connection) -> None:
        """Run the change on `conn` (inside the caller's transaction)."""
        if isinstance(self.step, str):
            conn.execute(self.step)
        else:
            self.step(conn)


CORE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        # The change log lets a reconnecting client learn what changed since its last version,
        # and lets other processes on the same file learn of commits they did not make.
        "change_log",
        """
        CREATE TABLE _changes (
            version INTEGER PRIMARY KEY,
            tables TEXT NOT NULL,
            rows TEXT NOT NULL,
            committed_at REAL NOT NULL
        );
        """,
    ),
    Migration(
        # Apps bring their own migrations; they are numbered per app, not on user_version,
        # so installing or removing an app never renumbers the core's.
        "app_migrations",
        """
        CREATE TABLE _app_migrations (
            app TEXT NOT NULL,
            number INTEGER NOT NULL,
            name TEXT NOT NULL,
            applied_at REAL NOT NULL,
            PRIMARY KEY (app, number)
        );
        """,
    ),
)


def core_level(conn: apsw.Connection) -> int:
    """The number of core migrations applied to the database on `conn`."""
    for (level,) in conn.execute("PRAGMA user_version"):
        return int(level)
    return 0


def migrate_core(conn: apsw.Connection, migrations: Sequence[Migration] = CORE_MIGRATIONS) -> int:
    """Apply the core migrations not yet applied; return the resulting level."""
    level = core_level(conn)
    if level > len(migrations):
        raise RuntimeError(
            f"The database is at schema level {level}, newer than this voicestack "
            f"({len(migrations)}): upgrade voicestack or open another database."
        )
    for number, migration in enumerate(migrations[level:], start=level + 1):
        with immediate_transaction(conn):
            if core_level(conn) >= number:
                continue  # another process on the same file applied it meanwhile
            migration.apply(conn)
            conn.execute(f"PRAGMA user_version = {number}")
        log.info("applied core migration %d (%s)", number, migration.name)
    return len(migrations)


@contextlib.contextmanager
def immediate_transaction(conn: apsw.Connection) -> Iterator[None]:
    """One write transaction, its lock taken at BEGIN: two processes migrating a new file at the
    same moment take turns (the busy timeout waits) instead of both applying a migration."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _applied_app_migrations(conn: apsw.Connection, app: str) -> set[int]:
    return {
        number
        for (number,) in conn.execute("SELECT number FROM _app_migrations WHERE app = ?", (app,))
    }


def migrate_app(conn: apsw.Connection, app: str, migrations: Sequence[Migration]) -> int:
    """Apply `app`'s migrations not yet recorded in `_app_migrations`; return how many ran."""
    applied = _applied_app_migrations(conn, app)
    ran = 0
    for number, migration in enumerate(migrations, start=1):
        if number in applied:
            continue
        with immediate_transaction(conn):
            if number in _applied_app_migrations(conn, app):
                continue  # another process on the same file applied it meanwhile
            migration.apply(conn)
            conn.execute(
                "INSERT INTO _app_migrations(app, number, name, applied_at) VALUES (?, ?, ?, ?)",
                (app, number, migration.name, time.time()),
            )
        log.info("applied migration %d (%s) of app %s", number, migration.name, app)
        ran += 1
    return ran
