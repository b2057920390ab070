"""`voicestack db ...`: host-side commands on the database file itself (no server needed).

`check` and `backup` only read, so they are safe while a server runs on the same file;
`migrate` applies the core migrations the server would apply when it starts. Each command
imports the store when it runs, so that `--help` loads none of it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import apsw
import typer

from cli.errors import USAGE, CliError, reports_errors
from cli.options import DEFAULT_DB, DbOption, JsonOption
from cli.output import Output

app = typer.Typer(
    help="The database file on this host: check it, back it up, migrate it.",
    no_args_is_help=True,
)


def _existing(db: Path) -> Path:
    if not db.is_file():
        raise CliError(f"No database at {db} (`voicestack serve --db {db}` creates one).")
    return db


@app.command("check")
@reports_errors
def check(db: DbOption = DEFAULT_DB, as_json: JsonOption = False) -> None:
    """Check the database: SQLite integrity and migration level (exit 1 when not ok).

    Example: voicestack db check --db /var/lib/voicestack/voicestack.db
    """
    from voicestack.schema import ALL_MIGRATIONS
    from voicestack.store.health import DatabaseUnreadable, inspect_database

    out = Output()
    spinner = out.err.status("checking integrity", spinner="dots")
    with spinner if out.err.is_terminal else contextlib.nullcontext():
        try:
            report = inspect_database(_existing(db), ALL_MIGRATIONS)
        except DatabaseUnreadable as exc:
            raise CliError(str(exc)) from None
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
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from voicestack.store.backup import backup_database

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
    from voicestack.store.backup import open_source

    conn = open_source(db)
    try:
        return int(conn.pragma("page_size"))
    finally:
        conn.close()


@app.command("migrate")
@reports_errors
def migrate(db: DbOption = DEFAULT_DB) -> None:
    """Apply the core migrations the database has not had yet; prints each one that ran.

    Example: voicestack db migrate --db ./voicestack.db
    """
    from voicestack.schema import ALL_MIGRATIONS
    from voicestack.store.connection import open_connection
    from voicestack.store.migrations import core_level, migrate_core

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
