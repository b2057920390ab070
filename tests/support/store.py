"""A Store on a file of its own with a demo app's tables, and ways to hold its writer thread."""

from __future__ import annotations

import threading
from pathlib import Path

from voicestack.store import Migration, Store

ITEMS = Migration("items", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
AUDIT = Migration("audit", "CREATE TABLE audit (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")


def open_store(path: Path, **options) -> Store:
    store = Store(path, **options)
    store.migrate_app("demo", [ITEMS, AUDIT])
    store.start()
    return store


def insert(name: str):
    return lambda db: db.execute("INSERT INTO items(name) VALUES (?)", (name,)).last_rowid


class WriterHold:
    """Occupies the writer thread until released, so the jobs queued meanwhile share one commit."""

    def __init__(self, store: Store) -> None:
        self._running = threading.Event()
        self._release = threading.Event()
        self.future = store.writer.submit(self._hold)
        assert self._running.wait(10), "the writer never ran the hold"

    def _hold(self, _db) -> bool:
        self._running.set()
        return self._release.wait(10)

    def release(self) -> None:
        self._release.set()
        assert self.future.result(10).value is True


def names(store: Store) -> list[str]:
    return store.read_sync(lambda s: [r["name"] for r in s.db().all("SELECT name FROM items")])
