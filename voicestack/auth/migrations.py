"""Users and their tokens, as a core migration after the agent's."""

from __future__ import annotations

from voicestack.store.migrations import Migration

AUTH_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        # A token is shown once and stored only as its SHA-256: it is 256 random bits, so a
        # slow password hash would add latency to every request and no safety. Revoked tokens
        # stay as rows so `token list` can say when and a reused token gets a precise error.
        "auth_users_tokens",
        """
        CREATE TABLE auth_users (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
            created_at REAL NOT NULL
        );
        CREATE TABLE auth_tokens (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES auth_users(id),
            hash BLOB NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            revoked_at REAL
        );
        CREATE INDEX auth_tokens_by_user ON auth_tokens(user_id);
        """,
    ),
)


# The access guard learns whose access a commit changed from the ids of the rows it changed,
# read after the commit (voicestack/reactive/access.py): a row whose id, or a membership whose
# thread, changed in place would be read as another's. Nothing does that; these make it so.
ACCESS_KEYS_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "access_keys_fixed",
        """
        CREATE TRIGGER auth_users_id_fixed BEFORE UPDATE OF id ON auth_users
        BEGIN SELECT RAISE(ABORT, 'a user''s id never changes'); END;
        CREATE TRIGGER auth_tokens_id_fixed BEFORE UPDATE OF id ON auth_tokens
        BEGIN SELECT RAISE(ABORT, 'a token''s id never changes'); END;
        CREATE TRIGGER auth_sessions_id_fixed BEFORE UPDATE OF id ON auth_sessions
        BEGIN SELECT RAISE(ABORT, 'a session''s id never changes'); END;
        CREATE TRIGGER thread_members_thread_fixed BEFORE UPDATE OF thread_id ON thread_members
        BEGIN SELECT RAISE(ABORT, 'a membership''s thread never changes'); END;
        """,
    ),
)
