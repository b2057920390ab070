"""Several processes opening a new database file at the same moment all migrate it safely: each
migration runs once, in a transaction whose write lock is taken at BEGIN."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import apsw

from voicestack import Migration
from voicestack.schema import ALL_MIGRATIONS
from voicestack.store.connection import open_connection
from voicestack.store.migrations import core_level, migrate_app, migrate_core

PROCESSES = 4
APP_MIGRATIONS = [Migration("things", "CREATE TABLE things (id INTEGER PRIMARY KEY)")]


def migrate_after(path: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    conn = open_connection(Path(path))
    try:
        barrier.wait(timeout=60)
        migrate_core(conn, ALL_MIGRATIONS)
        migrate_app(conn, "race", APP_MIGRATIONS)
    finally:
        conn.close()


def test_processes_migrating_one_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    for round_number in range(3):
        path = str(tmp_path / f"race{round_number}.db")
        barrier = context.Barrier(PROCESSES)
        workers = [
            context.Process(target=migrate_after, args=(path, barrier)) for _ in range(PROCESSES)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert [worker.exitcode for worker in workers] == [0] * PROCESSES
        conn = open_connection(Path(path))
        try:
            assert core_level(conn) == len(ALL_MIGRATIONS)
            recorded = conn.execute("SELECT count(*) FROM _app_migrations WHERE app = 'race'")
            assert recorded.fetchall() == [(1,)]
        finally:
            conn.close()


def test_a_new_file_switches_to_wal_once_another_writer_lets_go(tmp_path: Path) -> None:
    # A file still in rollback mode whose write lock another process holds: SQLite refuses the
    # switch to WAL at once (its busy handler is skipped for a read lock's upgrade).
    path = tmp_path / "held.db"
    holder = apsw.Connection(str(path))
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    releaser = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    releaser.start()
    try:
        conn = open_connection(path)
    finally:
        releaser.join()
    try:
        assert conn.pragma("journal_mode") == "wal"
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        conn.close()
        holder.close()
