"""The writers' cross-process lock (voicestack.store.write_lock): a second process waits for
it and enters as soon as it is released, not after a busy handler's sleep; a lock that cannot
be had never stops a write."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from voicestack.store.store import Store
from voicestack.store.write_lock import WriteLock

TAKE_AND_SAY = """
import sys, time
from pathlib import Path
from voicestack.store.write_lock import WriteLock
lock = WriteLock(Path(sys.argv[1]))
print("waiting", flush=True)
lock.acquire()
print("entered", time.monotonic(), flush=True)
lock.release()
lock.close()
"""


def test_a_second_process_waits_for_the_lock_and_enters_when_it_is_released(
    tmp_path: Path,
) -> None:
    lock = WriteLock(tmp_path / "app.db")
    lock.acquire()
    other = subprocess.Popen(
        [sys.executable, "-c", TAKE_AND_SAY, str(tmp_path / "app.db")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None
        assert other.stdout.readline() == "waiting\n"
        time.sleep(0.5)
        assert other.poll() is None  # still waiting while this process holds it
        released = time.monotonic()
        lock.release()
        word, entered = other.stdout.readline().split()
        assert other.wait(timeout=10) == 0
    finally:
        other.kill()
        other.wait()
        if other.stdout is not None:
            other.stdout.close()
        lock.close()
    assert word == "entered"
    assert float(entered) - released < 0.25
    assert lock.path == tmp_path / "app.db-writelock"


def test_the_store_takes_the_lock_around_each_transaction(tmp_path: Path) -> None:
    store = Store(tmp_path / "app.db")
    store.start()
    outside = WriteLock(tmp_path / "app.db")
    try:
        store.writer.submit(lambda db: db.execute("CREATE TABLE notes (text TEXT)")).result(10)
        outside.acquire()
        pending = store.writer.submit(lambda db: db.execute("INSERT INTO notes VALUES ('x')"))
        time.sleep(0.3)
        assert not pending.done()  # the writer waits for the lock, not for SQLite
        outside.release()
        assert pending.result(timeout=10).version > 0
    finally:
        outside.close()
        store.close()


def test_a_lock_file_that_cannot_be_opened_leaves_writes_to_sqlite(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "app.db-writelock").mkdir()  # in the way: it cannot be opened as a file
    store = Store(tmp_path / "app.db")
    store.start()
    try:
        store.writer.submit(lambda db: db.execute("CREATE TABLE notes (text TEXT)")).result(10)
        done = store.writer.submit(lambda db: db.execute("INSERT INTO notes VALUES ('x')"))
        assert done.result(timeout=10).version > 0
    finally:
        store.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "cannot be opened" in warnings[0]
    assert "this process writes without it" in warnings[0]


def test_a_holder_that_never_lets_go_is_passed_by_after_the_timeout(tmp_path: Path) -> None:
    holder = WriteLock(tmp_path / "app.db")
    waiter = WriteLock(tmp_path / "app.db", timeout_s=0.3)
    holder.acquire()
    try:
        started = time.monotonic()
        assert waiter.acquire() is False
        waited = time.monotonic() - started
    finally:
        holder.close()
        waiter.close()
    assert 0.3 <= waited < 2.0
