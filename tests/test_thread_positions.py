"""A new message's place comes from its thread's row (`last_position`), which the migration sets
from the messages already there and a trigger keeps for every insert: a message a mutation
inserts with its own SQL included, so no place is ever taken twice."""

from __future__ import annotations

import json
from pathlib import Path

import apsw
import pytest

from voicestack.agent.membership import require_thread
from voicestack.agent.threads import insert_message, insert_thread, start_turn, start_user_turn
from voicestack.auth.users import ensure_user
from voicestack.schema import ALL_MIGRATIONS
from voicestack.store.connection import open_connection
from voicestack.store.db import WriteDB
from voicestack.store.migrations import migrate_core


def _in_transaction(conn: apsw.Connection, fn):
    with conn:
        return fn(WriteDB(conn))


def _last_positions(conn: apsw.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT id, last_position FROM threads").fetchall())


@pytest.fixture
def conn(tmp_path: Path):
    conn = open_connection(tmp_path / "positions.db")
    yield conn
    conn.close()


def test_the_migration_takes_each_threads_last_position_from_its_messages(conn):
    names = [migration.name for migration in ALL_MIGRATIONS]
    migrate_core(conn, ALL_MIGRATIONS[: names.index("thread_last_position")])
    old = conn.execute
    old("INSERT INTO threads(id, created_at, updated_at) VALUES ('t1', 0, 0), ('t2', 0, 0)")
    for position in (1, 2, 7):
        old(
            "INSERT INTO messages(id, thread_id, position, role, status, created_at, updated_at)"
            f" VALUES ('m{position}', 't1', {position}, 'user', 'complete', 0, 0)"
        )
    migrate_core(conn, ALL_MIGRATIONS)
    assert _last_positions(conn) == {"t1": 7, "t2": 0}
    turn = _in_transaction(conn, lambda db: start_turn(db, "t1", "next", None))
    positions = dict(conn.execute("SELECT id, position FROM messages").fetchall())
    assert (positions[turn["messageId"]], positions[turn["replyId"]]) == (8, 9)


def test_a_message_inserted_by_a_mutations_own_sql_moves_the_place_on(conn):
    migrate_core(conn, ALL_MIGRATIONS)
    thread_id = _in_transaction(conn, lambda db: insert_thread(db, None))
    _in_transaction(conn, lambda db: start_turn(db, thread_id, "first", None))
    conn.execute(
        "INSERT INTO messages(id, thread_id, position, role, status, created_at, updated_at)"
        " VALUES ('own', ?, 40, 'system', 'complete', 0, 0)",
        (thread_id,),
    )
    message_id = _in_transaction(
        conn, lambda db: insert_message(db, thread_id, "user", "complete", text="after")
    )
    (position,) = conn.execute(
        "SELECT position FROM messages WHERE id = ?", (message_id,)
    ).fetchone()
    assert position == 41
    assert _last_positions(conn) == {thread_id: 41}


def test_a_turn_from_the_threads_row_reads_neither_the_thread_nor_its_author_again(conn):
    migrate_core(conn, ALL_MIGRATIONS)
    ada = _in_transaction(conn, lambda db: ensure_user(db, "ada"))
    thread_id = _in_transaction(conn, lambda db: insert_thread(db, ada))
    _in_transaction(conn, lambda db: start_turn(db, thread_id, "first", ada.id))
    statements: list[str] = []
    conn.exec_trace = lambda _cursor, sql, _bindings: statements.append(sql) or True

    def send(db: WriteDB) -> dict[str, str]:
        return start_user_turn(db, require_thread(db, thread_id, ada), "second", ada)

    turn = _in_transaction(conn, send)
    conn.exec_trace = None
    positions = dict(conn.execute("SELECT id, position FROM messages").fetchall())
    assert (positions[turn["messageId"]], positions[turn["replyId"]]) == (3, 4)
    reads_of_threads = [sql for sql in statements if "FROM threads" in sql]
    assert len(reads_of_threads) == 1
    assert "thread_members" in reads_of_threads[0]
    assert not [sql for sql in statements if "auth_users" in sql]
    (data,) = conn.execute(
        "SELECT data FROM thread_events WHERE kind = 'message' AND ref = ?", (turn["messageId"],)
    ).fetchone()
    assert json.loads(data)["authorName"] == "ada"
