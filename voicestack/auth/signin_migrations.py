"""Sign-in's tables, as a core migration appended after the others (voicestack/schema.py)."""

from __future__ import annotations

from voicestack.store.migrations import Migration

SIGNIN_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        # People who sign in with an identity provider or an email link: a user is known by
        # (provider, subject), never by a name or an email the provider lets them change.
        # A session is a credential like a token, stored as the SHA-256 of its cookie, with a
        # sliding expiry; pending sign-ins (state, nonce, PKCE verifier) and email links wait
        # in `auth_pending` until used once or expired, so any server process on the file can
        # finish a sign-in another one started. A disabled user keeps their rows and threads.
        "signin_sessions",
        """
        ALTER TABLE auth_users ADD COLUMN email TEXT;
        ALTER TABLE auth_users ADD COLUMN disabled_at REAL;
        CREATE TABLE auth_identities (
            provider TEXT NOT NULL,
            subject TEXT NOT NULL,
            user_id TEXT NOT NULL REFERENCES auth_users(id),
            email TEXT,
            created_at REAL NOT NULL,
            PRIMARY KEY (provider, subject)
        );
        CREATE INDEX auth_identities_by_user ON auth_identities(user_id);
        CREATE TABLE auth_sessions (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES auth_users(id),
            hash BLOB NOT NULL UNIQUE,
            provider TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            revoked_at REAL
        );
        CREATE INDEX auth_sessions_by_user ON auth_sessions(user_id);
        CREATE TABLE auth_pending (
            key TEXT PRIMARY KEY,
            data TEXT NOT NULL,
            expires_at REAL NOT NULL
        );
        """,
    ),
)
