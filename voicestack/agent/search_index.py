"""The full-text index of messages, written just after the commits that change them.

A message's words used to be indexed by a trigger inside the transaction that saved it: for a
sent message that was three more B-trees (FTS5's data, index and sizes) written before the
commit that its watchers wait for. Now the triggers only note the message in
`message_search_pending`, and the process that committed it indexes everything noted there in
one write right after. Messages saved close together share that write, and so one new FTS5
segment.

The rule the triggers keep: a message in `message_search_pending` has nothing in the index; any
other message has its current text there. So an edited or deleted message takes its old words
out only when they were indexed, and the index never holds words of a text that is gone.

What the caller of a mutation sees: its answer comes once what the mutation noted is indexed, so
a search made after it finds the new message (Runtime.mutation). Others may see the message in
its thread a moment before a search finds it; a watched search runs again when the index takes
it in (it reads the pending list).
"""

from __future__ import annotations

import asyncio
import logging

from voicestack.store.changes import ChangeSet
from voicestack.store.db import WriteDB
from voicestack.store.store import Store

log = logging.getLogger(__name__)

PENDING_TABLE = "message_search_pending"


def index_pending_messages(db: WriteDB) -> int:
    """Index the text of every message waiting in the pending list, and empty the list; returns
    how many were waiting. Safe to run anywhere, any number of times."""
    waiting: int = db.scalar(f"SELECT count(*) FROM {PENDING_TABLE}")
    if waiting:
        db.execute(
            "INSERT INTO message_search(rowid, text)"
            f" SELECT m.rowid, m.text FROM {PENDING_TABLE} p JOIN messages m ON m.rowid = p.rowid"
        )
        db.execute(f"DELETE FROM {PENDING_TABLE}")
    return waiting


class SearchIndexer:
    """Indexes, right after, what this process's commits note in the pending list."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        # Versions: the newest commit that noted messages, and the newest one an index write
        # started after (so it took in everything noted up to there).
        self._noted = 0
        self._indexed = 0
        self._caught_up = asyncio.Event()
        self._failed = False

    def start(self) -> None:
        """Index what is already waiting (noted before a crash), then what commits note; call
        once, on the event loop."""
        self._loop = asyncio.get_running_loop()
        self._store.add_commit_listener(self._on_commit)
        self._kick()

    async def indexed(self, version: int) -> None:
        """Return once what commits up to `version` noted is indexed: at once when they noted
        nothing still waiting, or when indexing is stopped or its last write failed (what
        waits is then indexed with the next message saved, or at the next start)."""
        while self._noted >= version > self._indexed and self._loop and not self._failed:
            if self._task is None:
                self._kick()
            self._caught_up.clear()
            await self._caught_up.wait()

    async def close(self) -> None:
        """Stop indexing once what waits is indexed (the last replies' texts too); what a
        failure leaves waiting is indexed at the next start."""
        self._loop = None
        task, self._task = self._task, None
        if task is not None:
            await task
        if not self._failed:
            try:
                await self._store.write(index_pending_messages)
            except Exception:
                log.exception("indexing messages for search failed; done at the next start")

    def _on_commit(self, changes: ChangeSet) -> None:
        # On the thread that committed: the writer's, or the loop's. Notes come from changes of
        # messages; an index write alone changes the list but no message, and needs no other.
        noted = PENDING_TABLE in changes.tables and "messages" in changes.tables
        if noted and changes.version > self._noted:
            self._noted = changes.version
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(self._kick)

    def _kick(self) -> None:
        if self._loop is None:
            return
        if self._task is not None and not self._task.done():
            self._again = True  # the write under way may have read the list before these came
            return
        self._task = self._loop.create_task(self._index(), name="voicestack-search-index")

    async def _index(self) -> None:
        self._again = True
        try:
            while self._again and self._loop is not None:
                self._again = False
                noted = self._noted
                try:
                    await self._store.write(index_pending_messages)
                except Exception:  # the store is closing, or a bug
                    log.exception(
                        "indexing messages for search failed; tried again with the next message"
                        " saved, and at the next start"
                    )
                    self._failed = True
                    return
                self._failed = False
                self._indexed = max(self._indexed, noted)
                self._caught_up.set()
        finally:
            self._task = None
            self._caught_up.set()
