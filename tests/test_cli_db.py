"""`voicestack db check|backup|migrate` on real database files, one of them under a running
server that keeps writing while it is backed up."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from tests.support.agent import StartAgentServer
from tests.support.cli import TerminalCliProcess, cli_env, invoke
from voicestack.schema import ALL_MIGRATIONS
from voicestack.store.backup import MAX_RESTARTS, backup_database
from voicestack.store.connection import open_connection
from voicestack.store.migrations import CORE_MIGRATIONS, migrate_core
from voicestack.store.store import integrity_check

KNOWN = len(ALL_MIGRATIONS)
INVENTORY = {"app": "tests.apps.inventory", "migrations": 3, "level": 3, "last": "migration_3"}


def make_db(path: Path, migrations: tuple = ALL_MIGRATIONS, sql: str = "") -> Path:
    conn = open_connection(path)
    migrate_core(conn, migrations)
    if sql:
        conn.execute(sql)
    conn.close()
    return path


def rows(path: Path, sql: str) -> list[tuple]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_check_reports_integrity_and_migration_levels_while_the_server_runs(
    start_agent_server: StartAgentServer,
) -> None:
    server = start_agent_server(None)
    db = str(server.db_path)
    result = invoke(["db", "check", "--db", db])
    assert (result.exit_code, result.stderr) == (0, f"{db} is ok\n"), result.output
    assert result.stdout == (
        "integrity\tok\n"
        f"core schema\t{KNOWN} of {KNOWN} migrations\n"
        "app tests.apps.inventory\t3 migrations (last: migration_3)\n"
    )
    result = invoke(["db", "check", "--json"], env={"VOICESTACK_DB": db})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "ok": True,
        "integrity": ["ok"],
        "coreLevel": KNOWN,
        "coreKnown": KNOWN,
        "pending": [],
        "apps": [INVENTORY],
        "problems": [],
    }


def test_migrate_applies_what_check_reports_pending(tmp_path: Path) -> None:
    db = str(make_db(tmp_path / "old.db", CORE_MIGRATIONS))
    before = len(CORE_MIGRATIONS)
    pending = KNOWN - before
    check = invoke(["db", "check", "--db", db])
    assert check.exit_code == 1
    assert check.stdout == f"integrity\tok\ncore schema\t{before} of {KNOWN} migrations\n"
    assert check.stderr == (
        f"error: {db} is not ok: {pending} core migration(s) pending:"
        " run `voicestack db migrate`.\n"
    )

    migrate = invoke(["db", "migrate", "--db", db])
    assert (migrate.exit_code, migrate.stderr) == (0, "")
    assert migrate.stdout == "".join(
        f"applied {number} {m.name}\n"
        for number, m in enumerate(ALL_MIGRATIONS[before:], start=before + 1)
    )
    again = invoke(["db", "migrate", "--db", db])
    assert (again.exit_code, again.stdout) == (0, "")
    assert again.stderr == f"{db} is up to date ({KNOWN} core migrations).\n"
    assert invoke(["db", "check", "--db", db]).exit_code == 0
    assert rows(Path(db), "PRAGMA user_version") == [(KNOWN,)]


def test_a_schema_newer_than_this_voicestack_is_not_ok_and_not_migrated(tmp_path: Path) -> None:
    db = str(make_db(tmp_path / "new.db", sql=f"PRAGMA user_version = {KNOWN + 5}"))
    check = invoke(["db", "check", "--db", db])
    assert check.exit_code == 1
    assert check.stderr == (
        f"error: {db} is not ok: its schema level {KNOWN + 5} is newer than this voicestack's"
        f" {KNOWN}.\n"
    )
    migrate = invoke(["db", "migrate", "--db", db])
    assert (migrate.exit_code, migrate.stdout) == (1, "")
    assert migrate.stderr == (
        f"error: The database is at schema level {KNOWN + 5}, newer than this voicestack"
        f" ({KNOWN}): upgrade voicestack or open another database.\n"
    )


def test_a_damaged_database_fails_the_check(tmp_path: Path) -> None:
    path = make_db(tmp_path / "damaged.db")
    conn = open_connection(path)
    conn.execute("CREATE TABLE t (x TEXT); CREATE INDEX t_x ON t(x)")
    with conn:
        conn.executemany("INSERT INTO t VALUES (?)", [(f"value {i:05}",) for i in range(3000)])
    page_size = conn.execute("PRAGMA page_size").fetchall()[0][0]
    (root,) = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = 't_x'").fetchall()[0]
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    conn.close()
    with path.open("r+b") as file:  # scribble over the index's root page
        file.seek((root - 1) * page_size)
        file.write(b"\xff" * page_size)

    result = invoke(["db", "check", "--db", str(path)])
    assert result.exit_code == 1
    assert re.fullmatch(
        rf"error: {re.escape(str(path))} is not ok: the integrity check found \d+ problem\(s\)\.\n",
        result.stderr,
    ), result.stderr
    assert not result.stdout.startswith("integrity\tok\n")


@pytest.mark.parametrize("command", ["check", "migrate", "backup"])
def test_a_missing_database_is_one_line(tmp_path: Path, command: str) -> None:
    db = tmp_path / "nowhere.db"
    extra = [str(tmp_path / "copy.db")] if command == "backup" else []
    result = invoke(["db", command, *extra, "--db", str(db)])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: No database at {db} (`voicestack serve --db {db}` creates one).\n"
    )
    assert not db.exists()


@pytest.fixture
def writer(start_agent_server: StartAgentServer) -> Iterator[tuple[Path, threading.Event]]:
    """A server with 3 MB of rows and a thread adding items until the event is set."""
    # A load generator, not a person: the per-token mutation rate would stop it at 600 a minute.
    server = start_agent_server(None, "--rate-mutations-per-min", "0")
    stop = threading.Event()
    with server.sync_client() as http:
        for _ in range(200):
            response = http.post("/api/mutation/blobs.add", json={"args": {"size": 16_000}})
            assert response.status_code == 200, response.text

    def write() -> None:
        with server.sync_client() as http:
            n = 0
            while not stop.is_set():
                n += 1
                response = http.post("/api/mutation/items.add", json={"args": {"name": f"i{n}"}})
                assert response.status_code == 200, response.text

    thread = threading.Thread(target=write)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while rows(server.db_path, "SELECT count(*) FROM items")[0][0] < 5:
            assert time.monotonic() < deadline, "the writer did not start"
            time.sleep(0.02)
        yield server.db_path, stop
    finally:
        stop.set()
        thread.join()


def test_backup_while_the_server_writes_is_a_consistent_copy(
    writer: tuple[Path, threading.Event], tmp_path: Path
) -> None:
    db, stop = writer
    copy = tmp_path / "copy.db"
    before = rows(db, "SELECT count(*) FROM items")[0][0]
    result = invoke(["db", "backup", str(copy), "--db", str(db)])
    after = rows(db, "SELECT count(*) FROM items")[0][0]
    stop.set()
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    assert re.fullmatch(
        rf"backed up {re.escape(str(db))} to {re.escape(str(copy))}: \d+ pages, \d+ bytes"
        r" in \d+\.\d\d s\n",
        result.stdout,
    ), result.stdout
    assert before < after  # the server wrote all along

    conn = apsw.Connection(str(copy))
    assert integrity_check(conn) == ["ok"]
    conn.close()
    copied = rows(copy, "SELECT id, name FROM items ORDER BY id")
    last = copied[-1][0]
    assert copied == rows(db, f"SELECT id, name FROM items WHERE id <= {last} ORDER BY id")
    blobs = "SELECT count(*), sum(length(data)) FROM blobs"
    assert rows(copy, blobs) == rows(db, blobs) == [(200, 200 * 16_000)]
    assert rows(copy, "PRAGMA user_version") == [(KNOWN,)]
    assert not list(tmp_path.glob(".copy.db.partial-*"))


def test_backup_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    db = make_db(tmp_path / "a.db", sql="CREATE TABLE t (x); INSERT INTO t VALUES (42)")
    target = tmp_path / "b.db"
    target.write_text("keep me")
    refused = invoke(["db", "backup", str(target), "--db", str(db)])
    assert (refused.exit_code, refused.stdout) == (1, "")
    assert refused.stderr == f"error: {target} exists; pass --force to replace it.\n"
    assert target.read_text() == "keep me"
    forced = invoke(["db", "backup", str(target), "--db", str(db), "--force"])
    assert forced.exit_code == 0, forced.output
    assert rows(target, "SELECT x FROM t") == [(42,)]


def test_backup_finishes_in_one_step_when_commits_keep_restarting_it(tmp_path: Path) -> None:
    db = make_db(tmp_path / "busy.db", sql="CREATE TABLE t (x BLOB)")
    other = open_connection(db)  # another connection's commits restart the copy
    with other:
        other.executemany("INSERT INTO t VALUES (randomblob(4000))", [()] * 300)
    steps: list[tuple[int, int]] = []

    def commit_each_step(copied: int, total: int) -> None:
        steps.append((copied, total))
        other.execute("INSERT INTO t VALUES (randomblob(10))")

    report = backup_database(db, tmp_path / "copy.db", commit_each_step)
    other.close()
    assert report.restarts == MAX_RESTARTS + 1
    assert steps[-1][0] == steps[-1][1]
    # The copy is the database as it was before the last step's commit.
    assert rows(tmp_path / "copy.db", "SELECT count(*) FROM t") == [(300 + len(steps) - 1,)]
    assert rows(db, "SELECT count(*) FROM t") == [(300 + len(steps),)]


def test_backup_shows_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    db = make_db(tmp_path / "a.db", sql="CREATE TABLE t (x); INSERT INTO t VALUES (1)")
    copy = tmp_path / "copy.db"
    command = ["db", "backup", str(copy), "--db", str(db)]
    with TerminalCliProcess(command, cli_env()) as cli:
        shown = cli.read_until(lambda out: "backed up" in out)
        assert cli.wait() == 0
    assert "backing up" in shown
    assert "━" in shown  # the bar
    assert rows(copy, "SELECT x FROM t") == [(1,)]
