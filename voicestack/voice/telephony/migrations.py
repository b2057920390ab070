"""The telephony table: the one-time tokens of Twilio media streams (core migration 13)."""

from __future__ import annotations

from voicestack.store.migrations import Migration

TELEPHONY_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        # The stream tokens live in the database, not in one process's memory, because with
        # --workers the webhook and the media stream may reach different processes. Only a
        # token's hash is kept, as for API tokens.
        "twilio_stream_tokens",
        """
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
