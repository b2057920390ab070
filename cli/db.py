"""`voicestack db ...`: host-side commands on the database file itself (no server needed).

`check` and `backup` only read, so they are safe while a server runs on the same file;
`migrate` applies the core migrations the server would apply when it starts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import apsw
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from cli.backup import backup_database, open_source
from cli.errors import USAGE, CliError, reports_errors
from cli.output import JsonOption, Output
from voicestack.schema import ALL_MIGRATIONS
from voicestack.store.connection import open_connection
from voicestack.store.migrations import core_level, migrate_core
from voicestack.store.store import integrity_check

app = typer.Typer(
    help="The database file on this host: check it, back it up, migrate it.",
    no_args_is_help=True,
)

DbOption = Annotated[
    Path,
    typer.Option(
        "--db", envvar="VOICESTACK_DB", help="The SQLite database file.", show_envvar=True
    ),
]
DEFAULT_DB = Path("voicestack.db")


def _existing(db: Path) -> Path:
    if not db.is_file():
        raise CliError(f"No database at {db} (`voicestack serve --db {db}` creates one).")
    return db


@dataclass
class SchemaReport:
    """A database's health: integrity check lines, core migration level, app migrations."""

    integrity: list[str]
    level: int
    known: int = len(ALL_MIGRATIONS)
    apps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pending(self) -> list[str]:
        """Names of the core migrations this database has not had yet."""
        return [m.name for m in ALL_MIGRATIONS[self.level :]]

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


def inspect_database(db: Path) -> SchemaReport:
    """Run the integrity check and read the migration levels of the database at `db`."""
    try:
        conn = open_source(db)
    except (apsw.Error, FileNotFoundError) as exc:
        raise CliError(f"Cannot open {db}: {exc}") from None
    try:
        level = core_level(conn)
        apps = _app_migrations(conn)
        try:
            integrity = integrity_check(conn)
        except apsw.CorruptError as exc:  # too damaged for the check to finish
            integrity = [str(exc)]
        return SchemaReport(integrity, level, apps=apps)
    except apsw.NotADBError:
        raise CliError(f"{db} is not a SQLite database.") from None
    except apsw.Error as exc:
        raise CliError(f"Cannot read {db}: {exc}") from None
    finally:
        conn.close()


@app.command("check")
@reports_errors
def check(db: DbOption = DEFAULT_DB, as_json: JsonOption = False) -> None:
    """Check the database: SQLite integrity and migration level (exit 1 when not ok).

    Example: voicestack db check --db /var/lib/voicestack/voicestack.db
    """
    out = Output()
    spinner = out.err.status("checking integrity", spinner="dots")
    with spinner if out.err.is_terminal else contextlib.nullcontext():
        report = inspect_database(_existing(db))
    if as_json:
        out.json(report.as_json())
    else:
        integrity = "ok" if report.integrity == ["ok"] else "; ".join(report.integrity[:20])
        rows = [
            ["integrity", integrity],
            ["core schema", f"{report.level} of {report.known} migrations"],
        ]
        rows += [
            [f"app {a['app']}", f"{a['migrations']} migrations (last: {a['last']})"]
            for a in report.apps
        ]
        out.table(["check", "result"], rows)
    problems = report.problems()
    if problems:
        raise CliError(f"{db} is not ok: {'; '.join(problems)}.")
    if not as_json:
        out.note(f"[green]{db} is ok[/]")


@app.command("backup")
@reports_errors
def backup(
    path: Annotated[Path, typer.Argument(help="Where to write the copy.", dir_okay=False)],
    db: DbOption = DEFAULT_DB,
    force: Annotated[bool, typer.Option("--force", help="Replace PATH if it exists.")] = False,
) -> None:
    """Copy the database to PATH online (safe while the server runs), with a progress bar.

    Example: voicestack db backup /backups/voicestack-$(date +%F).db
    """
    source = _existing(db)
    if path.exists() and not force:
        raise CliError(f"{path} exists; pass --force to replace it.")
    if path.exists() and path.resolve() == source.resolve():
        raise CliError(f"{path} is the database itself; back it up to another path.", USAGE)
    if not path.parent.is_dir():
        raise CliError(f"{path.parent} is not a directory.")
    out = Output()
    columns = (
        TextColumn("backing up"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=out.err, disable=not out.err.is_terminal) as progress:
        task = progress.add_task("backup", total=None)
        page = _page_size(source)

        def advance(copied: int, total: int) -> None:
            progress.update(task, completed=copied * page, total=total * page)

        try:
            report = backup_database(source, path, advance)
        except (apsw.Error, OSError) as exc:
            raise CliError(f"The backup of {db} to {path} failed: {exc}") from None
    out.line(
        f"backed up {db} to {path}: {report.pages} pages, {report.bytes} bytes"
        f" in {report.seconds:.2f} s"
    )


def _page_size(db: Path) -> int:
    conn = open_source(db)
    try:
        return int(conn.execute("PRAGMA page_size").fetchall()[0][0])
    finally:
        conn.close()


@app.command("migrate")
@reports_errors
def migrate(db: DbOption = DEFAULT_DB) -> None:
    """Apply the core migrations the database has not had yet; prints each one that ran.

    Example: voicestack db migrate --db ./voicestack.db
    """
    out = Output()
    try:
        conn = open_connection(_existing(db))
    except apsw.Error as exc:
        raise CliError(f"Cannot open {db}: {exc}") from None
    try:
        before = core_level(conn)
        try:
            migrate_core(conn, ALL_MIGRATIONS)
        except RuntimeError as exc:
            raise CliError(str(exc)) from None
        except apsw.Error as exc:
            raise CliError(f"A migration of {db} failed: {exc}") from None
    finally:
        conn.close()
    ran = list(enumerate(ALL_MIGRATIONS[before:], start=before + 1))
    for number, migration in ran:
        out.line(f"applied {number} {migration.name}")
    if not ran:
        out.note(f"{db} is up to date ({len(ALL_MIGRATIONS)} core migrations).")
