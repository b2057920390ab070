"""SQLite through apsw: the Store, its migrations and its change feed."""

from voicestack.store.changes import ChangeSet
from voicestack.store.db import ExecResult, ReadDB, WriteDB
from voicestack.store.migrations import Migration
from voicestack.store.readers import Snapshot
from voicestack.store.store import Store
from voicestack.store.write_jobs import WriteResult

__all__ = [
    "ChangeSet",
    "ExecResult",
    "Migration",
    "ReadDB",
    "Snapshot",
    "Store",
    "WriteDB",
    "WriteResult",
]
