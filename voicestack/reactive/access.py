"""Token lookups cached per process, and event streams closed when their access is revoked.

The guard is a hub gate (a CommitObserver delivered first) over the auth tables and the tables
the streams' own conditions read (thread membership), so it hears of every commit that touches
them, from this process or another one on the same file (`voicestack token revoke` writes the
file directly). On such a commit it forgets its cached lookups and ends each open stream whose
token was revoked or whose caller may no longer see what it watches. The Runtime registers it.

Streams end at that exact commit: the guard judges them in the batch's own snapshot and is
delivered before anything else of the batch, so a stream it ends gets nothing of that version.
It judges only the streams a commit may concern: those whose credential or user it changed,
and those whose condition's scope (the thread a feed shows) it changed; every stream when the
changed rows cannot be told (a row deleted, too many). So a new token, session or thread costs
no read per open stream.
A revoked token is final. A false condition is final once the snapshot is no older than the
stream's own access check; a snapshot older than that check predates the stream and says nothing.
When the snapshot cannot tell (the check has not reported its version yet, or the stream was
watched while the batch was read), the stream is held, sending nothing new, while a fresh
snapshot decides; then it is ended, dropping what was held, or resumed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from voicestack.auth.sessions import SessionLookup, credential_state, find_session, session_hash
from voicestack.auth.users import Identity, identify, token_hash
from voicestack.identity import Caller
from voicestack.reactive.channel import Outbox
from voicestack.store.changes import ChangeSet, changed_values
from voicestack.store.db import ReadDB
from voicestack.store.readers import Snapshot
from voicestack.store.store import Store

log = logging.getLogger(__name__)

# A stream's extra condition, checked in the commit's snapshot: may its caller still see it?
StillAllowed = Callable[[ReadDB], bool]
CACHE_LIMIT = 10_000
AUTH_TABLES = frozenset({"auth_tokens", "auth_users", "auth_sessions"})
# The scopes (say, threads) whose conditions some commits may have changed, read in the batch's
# snapshot; None: any scope.
ChangedScopes = Callable[[ReadDB, list[ChangeSet]], frozenset[str] | None]
# Why the guard ended a stream (Outbox.ended_by).
TOKEN_REVOKED = "token_revoked"  # noqa: S105 (a reason, not a secret)
ACCESS_REMOVED = "access_removed"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who opens a stream: the identity behind their token, and the guard's `generation` when
    that token was checked (None: unknown)."""

    identity: Identity
    checked_at: int | None = None

    @property
    def caller(self) -> Caller:
        """The user the stream's queries run as."""
        return self.identity.caller


@dataclass(eq=False, slots=True)
class _Watched:
    identity: Identity
    still_allowed: StillAllowed | None
    # What the condition is about (a thread's id): only a change in that scope can make it false.
    scope: str | None = None
    # The version of the snapshot in which the stream's own access check passed; None until
    # its route reports it, and always for streams whose only condition is the token.
    since: int | None = None
    # The newest batch version whose snapshot refused the stream while `since` was unknown.
    refused_at: int | None = None
    # Re-checks in flight: the outbox is held while there is any.
    rechecks: int = 0


@dataclass(slots=True)
class _Verdict:
    version: int
    auth_changed: bool
    # The streams judged in the batch's snapshot (None: the batch changed no access at all).
    judged: frozenset[Outbox] | None = None
    revoked: list[Outbox] = field(default_factory=list)  # their token is revoked
    # Their token is not in the snapshot (which may predate it), or `still_allowed` is false.
    refused: list[Outbox] = field(default_factory=list)


class AccessGuard:
    """Answers "whose token is this?" from a cache, and cuts streams whose access ends.

    A CommitObserver to register as a gate: delivered before the batch's values and events.
    """

    active = True  # the cache must hear of every revocation, watched or not

    def __init__(
        self,
        store: Store,
        condition_tables: frozenset[str] = frozenset(),
        changed_scopes: ChangedScopes | None = None,
    ) -> None:
        """`condition_tables`: what the streams' `still_allowed` conditions read, so that a
        commit there re-judges them; `changed_scopes`: which scopes such a commit touched, so
        that only the streams of those scopes are judged again (without it, every stream is)."""
        self._store = store
        self._condition_tables = condition_tables
        self._changed_scopes = changed_scopes
        self._watched_tables = AUTH_TABLES | condition_tables
        self._cache: dict[bytes, Identity | None] = {}
        self._sessions: dict[bytes, SessionLookup | None] = {}
        self._generation = 0
        self._streams: dict[Outbox, _Watched] = {}
        self._prune_at = 64
        self._rechecks: set[asyncio.Task[None]] = set()

    @property
    def tables(self) -> frozenset[str]:
        """The auth tables always (the cache hears of every change); the condition tables only
        while streams are watched. A stream watched later reads them in its own access check,
        after `watch`, so a commit there before it needs no batch of the hub."""
        return self._watched_tables if self._streams else AUTH_TABLES

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

    async def identify_session(self, secret: str) -> SessionLookup | None:
        """The live session behind a `vs_session` cookie (None: unknown, ended, expired or its
        user disabled), from the cache when it can; its expiry is judged now, on every call."""
        key = session_hash(secret)
        if key in self._sessions:
            lookup = self._sessions[key]
        else:
            generation = self._generation
            lookup = await self._store.read(
                lambda snapshot: find_session(snapshot.db(), secret, time.time())
            )
            if generation == self._generation:
                if len(self._sessions) >= CACHE_LIMIT:
                    self._sessions.clear()
                self._sessions[key] = lookup
        return lookup if lookup is not None and lookup.expires_at > time.time() else None

    def watch(
        self,
        outbox: Outbox,
        viewer: Viewer | None,
        still_allowed: StillAllowed | None = None,
        scope: str | None = None,
    ) -> None:
        """End `outbox` at the first commit after which its viewer's token is revoked or
        `still_allowed` is false: nothing of that commit's version or later is sent. A stream
        with no viewer (no token) is not watched. `scope`: what `still_allowed` is about (the
        thread a feed shows), so that only a commit in that scope has it judged again.

        `viewer.checked_at` is the `generation` at which the token was identified: if users or
        tokens changed since, the commit that did it was handled before this stream was watched,
        so the stream is held until the token is checked once more. Call this before the
        stream's own access check reads the database, so that no membership change can fall
        between the two, and report that read's version with `checked`.
        """
        if viewer is None:
            return
        if len(self._streams) >= self._prune_at:
            # Streams that ended since the last access commit: forget them now and then, not
            # only when an access commit comes.
            for gone in [outbox for outbox in self._streams if outbox.closed]:
                del self._streams[gone]
            self._prune_at = max(64, 2 * len(self._streams))
        watched = _Watched(viewer.identity, still_allowed, scope)
        self._streams[outbox] = watched
        if viewer.checked_at is not None and viewer.checked_at != self._generation:
            self._recheck(outbox, watched)

    def checked(self, outbox: Outbox, version: int) -> None:
        """The stream's own access check passed in the snapshot at `version`: a later snapshot
        that refuses the stream decides alone; an earlier one predates the stream."""
        watched = self._streams.get(outbox)
        if watched is None:
            return
        watched.since = version
        if watched.refused_at is not None and version <= watched.refused_at:
            # refused after its check passed: ended, even if granted again
            self._end(outbox, ACCESS_REMOVED)

    def collect(self, snapshot: Snapshot, changes: list[ChangeSet]) -> _Verdict:
        """In the commit's snapshot: which watched streams lost their access."""
        auth_changed = any(cs.touches(AUTH_TABLES) for cs in changes)
        conditions_changed = any(cs.touches(self._condition_tables) for cs in changes)
        if not auth_changed and not conditions_changed:
            return _Verdict(snapshot.version, auth_changed)
        db = snapshot.db()
        streams = list(self._streams.items())
        verdict = _Verdict(snapshot.version, auth_changed, frozenset(o for o, _ in streams))
        changed = _changed_credentials(db, changes) if auth_changed else _UNCHANGED
        scopes: frozenset[str] | None = frozenset()
        if conditions_changed:
            scopes = self._changed_scopes(db, changes) if self._changed_scopes else None
        for outbox, watched in streams:
            if outbox.closed:
                continue
            touched = changed is None or changed.touch(watched.identity)
            live = _token_state(db, watched.identity.token_id) if touched else True
            # A condition may turn false with its scope's rows, or with its viewer's own.
            in_scope = scopes is None or watched.scope is None or watched.scope in scopes
            allowed = watched.still_allowed
            if live is False:
                verdict.revoked.append(outbox)
            elif live is None or (
                allowed is not None and (touched or in_scope) and not allowed(db)
            ):
                verdict.refused.append(outbox)
        return verdict

    def deliver(self, verdict: _Verdict) -> None:
        """Forget cached lookups after an auth change; end or hold the streams that lost access,
        before anything of the batch is sent to them."""
        if verdict.auth_changed:
            self._generation += 1
            self._cache.clear()
            self._sessions.clear()
        for outbox in list(self._streams):
            if outbox.closed:
                del self._streams[outbox]
        if verdict.judged is None:
            return
        for outbox in verdict.revoked:
            self._end(outbox, TOKEN_REVOKED)
        for outbox in verdict.refused:
            watched = self._streams.get(outbox)
            if watched is None:
                continue
            if watched.since is None:
                watched.refused_at = max(watched.refused_at or 0, verdict.version)
                self._recheck(outbox, watched)
            elif watched.since <= verdict.version:
                self._end(outbox, ACCESS_REMOVED)
            # else the snapshot predates the stream's own check, which found it allowed
        if verdict.auth_changed:
            # Watched while the batch was read, with a token identified before this commit: its
            # own check read no token, so only a fresh snapshot can tell.
            for outbox, watched in list(self._streams.items()):
                if outbox not in verdict.judged:
                    self._recheck(outbox, watched)

    def _recheck(self, outbox: Outbox, watched: _Watched) -> None:
        watched.rechecks += 1
        outbox.hold()
        task = asyncio.get_running_loop().create_task(self._confirm(outbox, watched))
        self._rechecks.add(task)
        task.add_done_callback(self._rechecks.discard)

    async def _confirm(self, outbox: Outbox, watched: _Watched) -> None:
        # A fresh snapshot, taken after the stream was watched and after the refusing batch,
        # sees every commit that matters: a token revoked or access removed by then ends it.
        try:
            refusal = await self._store.read(lambda snap: _refusal(snap.db(), watched))
        except Exception:
            log.exception("re-checking a stream's access failed; ending the stream")
            refusal = ACCESS_REMOVED
        watched.rechecks -= 1
        if refusal is not None:
            self._end(outbox, refusal)
        elif watched.rechecks == 0:
            # Granted now. A refusal at a version its check reached was ended by `checked`; one
            # it has not reported yet is judged there, before the stream is sent anything.
            outbox.resume()

    def _end(self, outbox: Outbox, reason: str) -> None:
        self._streams.pop(outbox, None)
        outbox.close(reason)  # what is pending (older commits) is still sent; what is held is not


def _refusal(db: ReadDB, watched: _Watched) -> str | None:
    """Why the stream may no longer be sent anything (`Outbox.ended_by`), or None: granted."""
    if _token_state(db, watched.identity.token_id) is not True:
        return TOKEN_REVOKED
    if watched.still_allowed is None or watched.still_allowed(db):
        return None
    return ACCESS_REMOVED


@dataclass(frozen=True, slots=True)
class _Changed:
    """The credentials (token and session ids) and users whose rows some commits changed."""

    credentials: frozenset[str]
    users: frozenset[str]

    def touch(self, identity: Identity) -> bool:
        """Whether these changes may have revoked `identity`, or changed what it may see."""
        return identity.token_id in self.credentials or identity.caller.id in self.users


def _changed_credentials(db: ReadDB, changes: list[ChangeSet]) -> _Changed | None:
    """Which credentials and users `changes` touched, read in the batch's snapshot; None when
    that cannot be told (changed_values): then every stream is judged. A commit that only adds
    a token or a session (a sign-in, a phone call on an edge) touches no open stream's
    credential, so it costs no read per open stream."""
    tokens = changed_values(db, changes, "auth_tokens", "id")
    sessions = changed_values(db, changes, "auth_sessions", "id")
    users = changed_values(db, changes, "auth_users", "id")
    if tokens is None or sessions is None or users is None:
        return None
    return _Changed(tokens | sessions, users)


_UNCHANGED = _Changed(frozenset(), frozenset())


def _token_state(db: ReadDB, token_id: str) -> bool | None:
    """True: live; False: revoked (or its user disabled); None: not in this snapshot (created
    after it). Sign-in sessions stand where tokens do (voicestack.auth.sessions)."""
    return credential_state(db, token_id)
