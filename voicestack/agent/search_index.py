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

A search still finds every message committed before it: a search query (SEARCH_QUERIES, watched
or not) or a reply's recall that finds messages waiting first indexes them itself, whichever
process noted them. A watched search runs again when the index takes a message in (it reads the
pending list).
"""

from __future__ import annotations

import asyncio
import logging

from voicestack.store.changes import ChangeSet
from voicestack.store.db import WriteDB
from voicestack.store.loop_calls import call_soon_on
from voicestack.store.readers import Snapshot
from voicestack.store.store import Store

log = logging.getLogger(__name__)

PENDING_TABLE = "message_search_pending"
# The queries that read the index: each waits until nothing committed before it waits to be
# indexed.
SEARCH_QUERIES = frozenset({"memory.search"})
# Messages indexed per write: a backlog (after a failure, or a process killed before its index
# write) is taken in several writes, so that sends in between never wait for all of it.
INDEX_CHUNK = 500


def index_pending_messages(db: WriteDB) -> int:
    """Index the text of up to INDEX_CHUNK messages waiting in the pending list, oldest first,
    and take them off it; returns how many were indexed (INDEX_CHUNK: call again). Safe to run
    anywhere, any number of times."""
    rowids = [
        row["rowid"]
        for row in db.all(
            f"SELECT rowid FROM {PENDING_TABLE} ORDER BY rowid LIMIT ?", (INDEX_CHUNK,)
        )
    ]
    if rowids:
        marks = ",".join("?" * len(rowids))
        db.execute(
            "INSERT INTO message_search(rowid, text)"
            f" SELECT rowid, text FROM messages WHERE rowid IN ({marks})",
            rowids,
        )
        db.execute(f"DELETE FROM {PENDING_TABLE} WHERE rowid IN ({marks})", rowids)
    return len(rowids)


async def _index_all(store: Store) -> None:
    while (await store.write(index_pending_messages)).value == INDEX_CHUNK:
        pass


def _waiting(snapshot: Snapshot) -> bool:
    found: int = snapshot.conn.execute(f"SELECT EXISTS (SELECT 1 FROM {PENDING_TABLE})").get
    return bool(found)


async def index_waiting(store: Store) -> None:
    """Index now whatever waits (noted by any process), unless nothing does: what a search does
    before it reads the index, so that it finds every message committed before it. A failure is
    logged, not raised: the search then answers from what is indexed."""
    try:
        if await store.read(_waiting):
            await _index_all(store)
    except Exception:
        log.warning("indexing messages for search failed; searching what is indexed", exc_info=True)


class SearchIndexer:
    """Indexes, right after, what this process's commits note in the pending list."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def start(self) -> None:
        """Index what is already waiting (noted before a crash), then what commits note; call
        once, on the event loop."""
        self._loop = asyncio.get_running_loop()
        self._store.add_commit_listener(self._on_commit)
        self._kick()

    async def close(self) -> None:
        """Stop indexing once what waits is indexed (the last replies' texts too)."""
        self._loop = None
        task, self._task = self._task, None
        if task is not None:
            await task
        await index_waiting(self._store)

    def _on_commit(self, changes: ChangeSet) -> None:
        # On the thread that committed: the writer's, or the loop's. Notes come from changes of
        # messages; an index write alone changes the list but no message, and needs no other.
        if PENDING_TABLE in changes.tables and "messages" in changes.tables:
            loop = self._loop
            if loop is not None and not loop.is_closed():
                call_soon_on(loop, self._kick)

    def _kick(self) -> None:
        if self._loop is None:
            return
        if self._task is not None and not self._task.done():
            self._again = True  # the write under way may have read the list before these came
            return
        self._task = self._loop.create_task(self._index(), name="voicestack-search-index")

    async def _index(self) -> None:
        self._again = True
        while self._again and self._loop is not None:
            self._again = False
            try:
                await _index_all(self._store)
            except Exception:  # the store is closing, or a bug
                log.exception(
                    "indexing messages for search failed; tried again with the next message"
                    " saved or search, and at the next start"
                )
                return
