"""ReplyEnds: wait for a reply to end, wherever it runs (`await ctx.threads.generate`).

It is a hub CommitObserver over `messages`: every batch of commits that touches messages while
someone waits is checked for the awaited replies' final rows. Commits of other processes on the
same file come through the hub too, so a reply the leader process runs is seen from any process.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from voicestack.functions.errors import FunctionError
from voicestack.store.changes import ChangeSet
from voicestack.store.readers import Snapshot
from voicestack.store.store import Store

_ENDED_SQL = (
    "SELECT id, status, text, error_code, error_message FROM messages"
    " WHERE status IN ('complete', 'failed', 'interrupted') AND id IN ({})"
)


@dataclass(frozen=True, slots=True)
class EndedReply:
    """A reply's final row: its status, text and error."""

    id: str
    status: str
    text: str
    error_code: str | None
    error_message: str | None


def _ended(snapshot: Snapshot, ids: frozenset[str]) -> list[EndedReply]:
    ordered = sorted(ids)
    sql = _ENDED_SQL.format(",".join("?" * len(ordered)))
    return [EndedReply(*row) for row in snapshot.conn.execute(sql, ordered)]


class ReplyEnds:
    """Futures that resolve with a reply's final row once it is committed."""

    tables = frozenset({"messages"})

    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: dict[str, list[asyncio.Future[EndedReply]]] = {}
        # Read on the hub's reader thread: replaced whole, never changed in place.
        self._ids: frozenset[str] = frozenset()

    @property
    def active(self) -> bool:
        """True while someone waits."""
        return bool(self._ids)

    async def wait(self, message_id: str) -> EndedReply:
        """The reply's final row, once it has ended (at once if it already has)."""
        waiter: asyncio.Future[EndedReply] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(message_id, []).append(waiter)
        self._ids = frozenset(self._waiting)
        try:
            # It may have ended before the waiter existed.
            done = await self._store.read(lambda snap: _ended(snap, frozenset({message_id})))
            if done and not waiter.done():
                waiter.set_result(done[0])
            return await waiter
        finally:
            waiters = self._waiting.get(message_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiting.pop(message_id, None)
            self._ids = frozenset(self._waiting)

    # -- the hub's CommitObserver protocol -----------------------------------------------------

    def collect(self, snapshot: Snapshot, changes: list[ChangeSet]) -> list[EndedReply]:
        """The final rows of the awaited replies, as of the batch's snapshot."""
        ids = self._ids
        return _ended(snapshot, ids) if ids else []

    def deliver(self, ended: list[EndedReply]) -> None:
        """Resolve the waiters of the replies that ended."""
        for reply in ended:
            for waiter in self._waiting.get(reply.id, []):
                if not waiter.done():
                    waiter.set_result(reply)

    def close(self) -> None:
        """The server stops: fail every wait with `server_stopped` (503). A reply still pending
        runs after the next start, too late for a caller of this process."""
        for waiters in self._waiting.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(
                        FunctionError(
                            "server_stopped",
                            "The server stopped before the reply ended; it runs after a restart.",
                            503,
                        )
                    )
