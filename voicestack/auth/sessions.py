"""Sign-in sessions: a cookie's secret stored as its SHA-256, with a sliding expiry.

A session is a credential like a bearer token: its id (`ses_...`) stands where a token's id does
in an `Identity`, so per-credential limits and stream revocation treat both alike
(`credential_state`). Its CSRF value is derived from the secret, so a `vs_csrf` cookie planted
by a sibling site cannot match a session it does not know.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass

from voicestack.auth.users import Identity
from voicestack.identity import Caller
from voicestack.store.db import ReadDB, WriteDB

SESSION_COOKIE = "vs_session"
CSRF_COOKIE = "vs_csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_PREFIX = "vss_"
SESSION_ID_PREFIX = "ses_"
# The expiry slides forward on use, at most once per this share of the lifetime: a write per
# session a day, not one per request.
RENEW_FRACTION = 1 / 14
# An ended session's row is kept a day, so that a stream it opened is still ended by its id.
KEEP_ENDED_S = 86_400.0
# Old rows are dropped by one new session in this many, not by each: a commit that deletes a
# session row has the access guard judge every open stream (whose the row was is gone), where
# a session added alone concerns none.
CLEAN_UP_EVERY = 32
# The provider of a phone call's session (an edge speaks for the call with it): it ends with
# its call, or at its fixed expiry, and never slides.
CALL_PROVIDER = "twilio-call"


def new_session_secret() -> str:
    """A fresh cookie value: `vss_` + 32 random bytes, base64url."""
    return SESSION_PREFIX + secrets.token_urlsafe(32)


def session_hash(secret: str) -> bytes:
    """The SHA-256 the database stores for a session's cookie value."""
    return hashlib.sha256(secret.encode()).digest()


def csrf_value(secret: str) -> str:
    """The `vs_csrf` value that goes with a session: a hash of its secret, not the secret."""
    digest = hashlib.sha256(b"vs_csrf\0" + secret.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class SessionLookup:
    """A live session: who it signs in, and when it expires unless used."""

    identity: Identity
    expires_at: float
    renews: bool = True  # False for a phone call's session (CALL_PROVIDER)


def create_session(db: WriteDB, user_id: str, provider: str, lifetime_s: float) -> str:
    """A new session for `user_id`; returns its cookie value (shown only this once). Now and
    then, sessions that ended or expired more than a day ago are dropped on the way."""
    secret = new_session_secret()
    now = time.time()
    if secrets.randbelow(CLEAN_UP_EVERY) == 0:
        db.execute(
            "DELETE FROM auth_sessions WHERE expires_at < ? OR revoked_at < ?",
            (now - KEEP_ENDED_S, now - KEEP_ENDED_S),
        )
    db.execute(
        "INSERT INTO auth_sessions(id, user_id, hash, provider, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            f"{SESSION_ID_PREFIX}{secrets.token_hex(8)}",
            user_id,
            session_hash(secret),
            provider,
            now,
            now + lifetime_s,
        ),
    )
    return secret


def find_session(db: ReadDB | WriteDB, secret: str, now: float) -> SessionLookup | None:
    """The live session behind a cookie value: not revoked, not expired, its user not disabled."""
    if not secret.startswith(SESSION_PREFIX) or len(secret) > 100:
        return None
    row = db.one(
        "SELECT s.id, s.expires_at, s.provider, u.id AS user_id, u.name, u.role"
        " FROM auth_sessions s JOIN auth_users u ON u.id = s.user_id"
        " WHERE s.hash = ? AND s.revoked_at IS NULL AND u.disabled_at IS NULL",
        (session_hash(secret),),
    )
    if row is None or row["expires_at"] <= now:
        return None
    caller = Caller(row["user_id"], row["name"], row["role"])
    renews = row["provider"] != CALL_PROVIDER
    return SessionLookup(Identity(caller, row["id"]), row["expires_at"], renews)


def needs_renewal(lookup: SessionLookup, lifetime_s: float, now: float) -> bool:
    """True when the session was last extended long enough ago to slide its expiry now (a
    phone call's session never slides)."""
    return lookup.renews and lookup.expires_at - now < lifetime_s * (1 - RENEW_FRACTION)


def renew_session(db: WriteDB, session_id: str, lifetime_s: float) -> float:
    """Push a live session's expiry to `lifetime_s` from now; returns the new expiry."""
    expires = time.time() + lifetime_s
    db.execute(
        "UPDATE auth_sessions SET expires_at = ? WHERE id = ? AND revoked_at IS NULL",
        (expires, session_id),
    )
    return expires


def end_session(db: WriteDB, secret: str) -> bool:
    """Revoke the session behind a cookie value; True when it was live."""
    done = db.execute(
        "UPDATE auth_sessions SET revoked_at = ? WHERE hash = ? AND revoked_at IS NULL",
        (time.time(), session_hash(secret)),
    )
    return done.changes > 0


def end_user_sessions(db: WriteDB, user_id: str) -> int:
    """Revoke every live session of a user; returns how many."""
    done = db.execute(
        "UPDATE auth_sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
        (time.time(), user_id),
    )
    return done.changes


def credential_state(db: ReadDB, credential_id: str) -> bool | None:
    """Whether a token or session (by id) still grants access: True: live; False: revoked, or
    its user disabled; None: not in this snapshot (created after it). A session's expiry is
    judged when it is presented, not here: an open stream outlives it, as a token's would."""
    if credential_id.startswith(SESSION_ID_PREFIX):
        sql = (
            "SELECT c.revoked_at, u.disabled_at FROM auth_sessions c"
            " JOIN auth_users u ON u.id = c.user_id WHERE c.id = ?"
        )
    else:
        sql = (
            "SELECT c.revoked_at, u.disabled_at FROM auth_tokens c"
            " JOIN auth_users u ON u.id = c.user_id WHERE c.id = ?"
        )
    row = db.one(sql, (credential_id,))
    if row is None:
        return None
    return row["revoked_at"] is None and row["disabled_at"] is None
