"""The scheduler's parts on a real SQLite file: the jobs migration on a database with unfinished
replies, reply jobs following their reply's end, cron schedules (and a server refusing one that
could never run), and the leader lease."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import apsw
import pytest

from voicestack.agent.reply_state import claim_next
from voicestack.agent.threads import finish_message, start_turn
from voicestack.agent.tool_loading import ToolSet
from voicestack.config import Settings
from voicestack.functions.apps import App, app_from_module
from voicestack.functions.cron import Cron
from voicestack.functions.errors import FunctionError
from voicestack.runtime import Runtime
from voicestack.scheduler.cron import queue_next_run, sync_crons
from voicestack.schema import ALL_MIGRATIONS
from voicestack.store.connection import open_connection
from voicestack.store.db import WriteDB
from voicestack.store.leader import LeaderLease
from voicestack.store.migrations import migrate_core


def open_db(path: Path, migrations: Any = ALL_MIGRATIONS) -> apsw.Connection:
    """A connection to `path` migrated up to `migrations`."""
    conn = open_connection(path)
    migrate_core(conn, migrations)
    return conn


def new_thread(db: WriteDB) -> str:
    """A thread row of its own."""
    db.execute(
        "INSERT INTO threads(id, title, owner, created_at, updated_at) VALUES ('thr_1', NULL,"
        " NULL, 0, 0)"
    )
    return "thr_1"


def old_reply(db: WriteDB, thread_id: str, status: str, position: int) -> str:
    """A reply row written with only the columns an older schema has; its id."""
    message_id = f"msg_{status}"
    db.execute(
        "INSERT INTO messages(id, thread_id, position, role, status, created_at, updated_at)"
        " VALUES (?, ?, ?, 'assistant', ?, ?, ?)",
        (message_id, thread_id, position, status, position, position),
    )
    return message_id


def jobs(conn: apsw.Connection) -> list[tuple[Any, ...]]:
    """(kind, name, ref, status, attempts, last_error) of every job, oldest first."""
    return conn.execute(
        "SELECT kind, name, ref, status, attempts, last_error FROM jobs ORDER BY created_at, rowid"
    ).fetchall()


def test_the_migration_gives_unfinished_replies_of_an_older_database_their_jobs(
    tmp_path: Path,
) -> None:
    before = ALL_MIGRATIONS[: [m.name for m in ALL_MIGRATIONS].index("scheduler_jobs")]
    conn = open_db(tmp_path / "old.db", before)
    db = WriteDB(conn)
    with conn:
        thread_id = new_thread(db)
        # A reply as an older voicestack queued it: no job (and the columns of its day).
        streaming, pending, _complete = (
            old_reply(db, thread_id, status, position)
            for position, status in enumerate(("streaming", "pending", "complete"), 1)
        )
    conn.close()
    conn = open_db(tmp_path / "old.db")

    assert sorted(jobs(conn)) == sorted(
        [
            ("reply", "agent.reply", streaming, "running", 1, None),
            ("reply", "agent.reply", pending, "pending", 0, None),
        ]
    )


@pytest.mark.parametrize(
    ("status", "error", "job"),
    [
        ("complete", None, ("done", None)),
        ("failed", ("provider_error", "It broke."), ("failed", "provider_error: It broke.")),
        ("interrupted", ("cancelled", "Stopped."), ("cancelled", "cancelled: Stopped.")),
        ("interrupted", ("handed_off", "A person."), ("cancelled", "handed_off: A person.")),
        (
            "interrupted",
            ("server_stopped", "The server stopped."),
            ("interrupted", "server_stopped: The server stopped."),
        ),
    ],
)
def test_a_reply_job_is_claimed_with_its_reply_and_ends_as_it_does(
    tmp_path: Path, status: str, error: tuple[str, str] | None, job: tuple[Any, ...]
) -> None:
    conn = open_db(tmp_path / "test.db")
    db = WriteDB(conn)
    with conn:
        thread_id = new_thread(db)
        reply_id = start_turn(db, thread_id, "hello", "usr_1")["replyId"]
    queued = jobs(conn)
    with conn:
        claim = claim_next(db, thread_id)
    claimed = jobs(conn)
    with conn:
        finish_message(db, reply_id, status, error=error)

    assert claim is not None
    assert claim.message_id == reply_id
    assert queued == [("reply", "agent.reply", reply_id, "pending", 0, None)]
    assert claimed == [("reply", "agent.reply", reply_id, "running", 1, None)]
    assert jobs(conn) == [("reply", "agent.reply", reply_id, job[0], 1, job[1])]


def test_a_cron_schedule_keeps_exactly_one_open_run_and_forgets_undeclared_ones(
    tmp_path: Path,
) -> None:
    conn = open_db(tmp_path / "test.db")
    db = WriteDB(conn)
    every_minute = Cron("* * * * *", "jobs.record", {"tag": "minute"})
    hourly = Cron("0 * * * *", "jobs.record", {"tag": "hour"})
    with conn:
        added = sync_crons(db, [every_minute, hourly])
        again = sync_crons(db, [every_minute, hourly])
        doubled = queue_next_run(db, every_minute)
    with conn:
        sync_crons(db, [every_minute])  # the hourly schedule was removed from the app
    rows = conn.execute("SELECT cron_key, status, run_at FROM jobs ORDER BY status").fetchall()

    assert (added, again, doubled) == (2, 0, None)
    assert [(key, status) for key, status, _ in rows] == [
        (hourly.key, "cancelled"),
        (every_minute.key, "pending"),
    ]
    assert rows[1][2] % 60 == 0


def test_a_cron_schedule_is_checked_when_declared() -> None:
    with pytest.raises(ValueError, match="not valid"):
        Cron("every minute", "jobs.record")
    module = types.ModuleType("bad_crons")
    module.CRONS = ["* * * * *"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match=r"CRONS\[0\] of bad_crons must be a Cron"):
        app_from_module(module)


def test_one_leader_per_database_file_until_it_releases(tmp_path: Path) -> None:
    first, second = LeaderLease(tmp_path / "a.db"), LeaderLease(tmp_path / "a.db")
    other = LeaderLease(tmp_path / "b.db")

    assert first.try_acquire()
    assert first.held
    assert not second.try_acquire()
    assert not second.held
    assert other.try_acquire()  # another file has a leader of its own
    first.release()
    assert second.try_acquire()
    assert first.path == tmp_path / "a.db.leader"
    second.release()
    other.release()


def test_a_server_refuses_a_cron_schedule_that_could_never_run(tmp_path: Path) -> None:
    app = App("bad", (), (), (Cron("* * * * *", "nope.nothing"),))
    with pytest.raises(FunctionError) as refused:
        Runtime(Settings(db=tmp_path / "test.db"), apps=[app], tools=ToolSet())
    assert (refused.value.code, refused.value.message) == (
        "unknown_job_function",
        "Cannot schedule 'nope.nothing': jobs run a registered mutation or action.",
    )
