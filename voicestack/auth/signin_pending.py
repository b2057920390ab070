"""What waits between two requests of a sign-in: a login's state, nonce and PKCE verifier, or an
email link, each under a key, usable once, until it expires.

Kept in the database rather than in one process's memory, so that the request that finishes a
sign-in may reach another server process (`--workers`) than the one that began it.
"""

from __future__ import annotations

import time

from voicestack.store.db import WriteDB


def put_pending(db: WriteDB, key: str, data: str, ttl_s: float) -> None:
    """Keep `data` under `key` for `ttl_s` seconds (replacing what was there); expired entries
    are dropped on the way."""
    now = time.time()
    db.execute("DELETE FROM auth_pending WHERE expires_at <= ?", (now,))
    db.execute(
        "INSERT OR REPLACE INTO auth_pending(key, data, expires_at) VALUES (?, ?, ?)",
        (key, data, now + ttl_s),
    )


def take_pending(db: WriteDB, key: str) -> str | None:
    """The data under `key`, removed in the same step so that it is used at most once; None
    when there is none or it expired."""
    row = db.one("DELETE FROM auth_pending WHERE key = ? RETURNING data, expires_at", (key,))
    if row is None or row["expires_at"] <= time.time():
        return None
    data: str = row["data"]
    return data
