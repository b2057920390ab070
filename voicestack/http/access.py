"""Token lookups cached per process, and event streams closed when their access is revoked.

The guard is a hub FeedSource over the auth and membership tables, so it hears of every commit
that touches them, from this process or another one on the same file (`voicestack token revoke`
writes the file directly). On such a commit it forgets its cached lookups and closes each open
stream whose token was revoked or whose caller may no longer see what it watches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from voicestack.auth import Identity, identify, token_hash
from voicestack.reactive.channel import Outbox
from voicestack.reactive.subscription import FeedJoin
from voicestack.store.changes import ChangeSet
from voicestack.store.db import ReadDB
from voicestack.store.readers import Snapshot
from voicestack.store.store import Store

log = logging.getLogger(__name__)

# A stream's extra condition, checked in the commit's snapshot: may its caller still see it?
StillAllowed = Callable[[ReadDB], bool]
CACHE_LIMIT = 10_000
AUTH_TABLES = frozenset({"auth_tokens", "auth_users"})
# Not `threads`: replies touch it on every commit, and no commit there changes who may see one.
MEMBERSHIP_TABLES = frozenset({"thread_members"})


@dataclass(slots=True)
class _Watched:
    identity: Identity
    still_allowed: StillAllowed | None


@dataclass(slots=True)
class _Verdict:
    auth_changed: bool
    revoked: list[Outbox]


class AccessGuard:
    """Answers "whose token is this?" from a cache, and cuts streams whose access ends."""

    tables = AUTH_TABLES | MEMBERSHIP_TABLES
    active = True  # the cache must hear of every revocation, watched or not

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[bytes, Identity | None] = {}
        self._generation = 0
        self._streams: dict[Outbox, _Watched] = {}
        self._prune_at = 64
        self._rechecks: set[asyncio.Task[None]] = set()

    @property
    def generation(self) -> int:
        """Advances with every commit that changes users or tokens (cached lookups are dropped)."""
        return self._generation

    async def identify(self, token: str) -> Identity | None:
        """The identity behind `token` (None: unknown or revoked), from the cache when it can."""
        key = token_hash(token)
        if key in self._cache:
            return self._cache[key]
        generation = self._generation
        identity = await self._store.read(lambda snapshot: identify(snapshot.db(), token))
        # A revocation delivered while we read must not be undone by this older answer.
        if generation == self._generation:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = identity
        return identity

    def watch(
        self,
        outbox: Outbox,
        identity: Identity,
        still_allowed: StillAllowed | None = None,
        checked_at: int | None = None,
    ) -> None:
        """Close `outbox` at the first commit after which its token is revoked or
        `still_allowed` is false.

        `checked_at` is the `generation` at which the token was identified: if users or tokens
        changed since, the commit that did it was handled before this stream was watched, so
        the token is checked once more now. Call this before the stream's own access check
        reads the database, so that no membership change can fall between the two.
        """
        if len(self._streams) >= self._prune_at:
            # Streams that ended since the last access commit: forget them now and then, not
            # only when an access commit comes.
            for gone in [outbox for outbox in self._streams if outbox.closed]:
                del self._streams[gone]
            self._prune_at = max(64, 2 * len(self._streams))
        self._streams[outbox] = _Watched(identity, still_allowed)
        if checked_at is not None and checked_at != self._generation:
            self._spawn(self._recheck(outbox, identity))

    async def _recheck(self, outbox: Outbox, identity: Identity) -> None:
        try:
            live = await self._store.read(lambda snap: _token_live(snap.db(), identity.token_id))
        except Exception:
            log.exception("re-checking a stream's token failed; ending the stream")
            live = False
        if not live:
            self._streams.pop(outbox, None)
            outbox.close()

    def collect(self, snapshot: Snapshot, changes: list[ChangeSet], _joins: list[FeedJoin]) -> Any:
        """In the commit's snapshot: which watched streams lost their access."""
        auth_changed = any(cs.touches(AUTH_TABLES) for cs in changes)
        members_changed = auth_changed or any(cs.touches(MEMBERSHIP_TABLES) for cs in changes)
        db = snapshot.db()
        revoked: list[Outbox] = []
        if not members_changed:
            return _Verdict(auth_changed, revoked)
        for outbox, watched in list(self._streams.items()):
            if outbox.closed:
                continue
            if not _still_granted(db, watched, auth_changed):
                revoked.append(outbox)
        return _Verdict(auth_changed, revoked)

    def deliver(self, verdict: _Verdict, _joins: list[FeedJoin]) -> None:
        """Forget cached lookups after an auth change; close the streams that lost access."""
        if verdict.auth_changed:
            self._generation += 1
            self._cache.clear()
        for outbox in list(self._streams):
            if outbox.closed:
                del self._streams[outbox]
        for outbox in verdict.revoked:
            watched = self._streams.get(outbox)
            if watched is not None:
                self._spawn(self._confirm(outbox, watched))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._rechecks.add(task)
        task.add_done_callback(self._rechecks.discard)

    async def _confirm(self, outbox: Outbox, watched: _Watched) -> None:
        # The batch's snapshot may predate the stream: a feed opened on a thread created after
        # it would look forbidden there. Only a snapshot taken now, after the stream was
        # watched, decides; it also sees any later revocation.
        try:
            granted = await self._store.read(lambda snap: _still_granted(snap.db(), watched, True))
        except Exception:
            log.exception("re-checking a stream's access failed; ending the stream")
            granted = False
        if not granted:
            self._streams.pop(outbox, None)
            outbox.close()  # what is already queued is still sent, then the stream ends


def _still_granted(db: ReadDB, watched: _Watched, auth_changed: bool) -> bool:
    if auth_changed and not _token_live(db, watched.identity.token_id):
        return False
    return watched.still_allowed is None or watched.still_allowed(db)


def _token_live(db: ReadDB, token_id: str) -> bool:
    return (
        db.one("SELECT 1 AS live FROM auth_tokens WHERE id = ? AND revoked_at IS NULL", (token_id,))
        is not None
    )
