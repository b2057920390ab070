"""The telephony tables: thread metadata and the one-time tokens of Twilio media streams."""

from __future__ import annotations

from voicestack.store.migrations import Migration

TELEPHONY_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        # A phone call's thread records where it came from (the caller's number, the call SID),
        # as a JSON object that other channels can fill with their own keys; NULL for threads
        # made through the API. The stream tokens live in the database, not in one process's
        # memory, because with --workers the webhook and the media stream may reach different
        # processes. Only a token's hash is kept, as for API tokens.
        "telephony",
        """
        ALTER TABLE threads ADD COLUMN metadata TEXT;
        CREATE TABLE twilio_stream_tokens (
            token_hash BLOB PRIMARY KEY,
            call_sid TEXT NOT NULL,
            caller TEXT,
            called TEXT,
            expires_at REAL NOT NULL
        );
        """,
    ),
)
