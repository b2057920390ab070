"""The agent's tables, as core migrations that follow the store's own."""

from __future__ import annotations

from voicestack.store.migrations import Migration

AGENT_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        # Threads, their messages and the model's tool calls are the agent's durable state.
        # Text ids (prefix + random) are stable across devices and never reused; the tables
        # keep their rowid because the update hook, and so reactivity, needs it.
        "agent_threads",
        """
        CREATE TABLE threads (
            id TEXT PRIMARY KEY,
            title TEXT,
            owner TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX threads_by_update ON threads(updated_at DESC, id);

        CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'tool', 'system')),
            text TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL
                CHECK (status IN ('pending', 'streaming', 'complete', 'failed', 'interrupted')),
            error_code TEXT,
            error_message TEXT,
            author TEXT,
            reply_to TEXT,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            tool_call_count INTEGER NOT NULL DEFAULT 0,
            wall_ms INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            UNIQUE (thread_id, position)
        );
        -- The reply runner looks for these after every commit and at start-up.
        CREATE INDEX messages_unfinished ON messages(thread_id, position)
            WHERE status IN ('pending', 'streaming');

        CREATE TABLE tool_calls (
            id TEXT PRIMARY KEY,
            thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
            message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            call_id TEXT NOT NULL,
            step INTEGER NOT NULL,
            name TEXT NOT NULL,
            args TEXT NOT NULL,
            status TEXT NOT NULL CHECK (
                status IN ('pending', 'awaiting_approval', 'running', 'done', 'failed')
            ),
            progress TEXT,
            result TEXT,
            error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX tool_calls_by_message ON tool_calls(message_id, step, created_at);
        CREATE INDEX tool_calls_by_thread ON tool_calls(thread_id, created_at);

        -- The thread feed: every message row change, text delta and tool-call change, in commit
        -- order. Its id is the SSE event id, so a client resumes exactly where it stopped, also
        -- across restarts (AUTOINCREMENT never reuses an id).
        CREATE TABLE thread_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
            kind TEXT NOT NULL CHECK (kind IN ('message', 'delta', 'tool_call', 'speech')),
            ref TEXT NOT NULL,
            data TEXT NOT NULL
        );
        CREATE INDEX thread_events_by_thread ON thread_events(thread_id, id);
        CREATE INDEX thread_events_by_ref ON thread_events(ref, id);
        """,
    ),
    Migration(
        # Voice: recorded uploads and spoken replies are rows, not files beside the database, so
        # Litestream replicates them with everything else and a restore loses no audio. A user
        # message links to the audio it was transcribed from; a reply may be asked to speak; the
        # audio a message cost (seconds heard, characters and seconds spoken) is usage like tokens.
        "voice_files",
        """
        CREATE TABLE files (
            id TEXT PRIMARY KEY,
            thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
            message_id TEXT REFERENCES messages(id) ON DELETE SET NULL,
            kind TEXT NOT NULL CHECK (kind IN ('upload', 'speech')),
            content_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            data BLOB NOT NULL,
            duration_s REAL,
            created_at REAL NOT NULL
        );
        CREATE INDEX files_by_message ON files(message_id);
        CREATE INDEX files_by_thread ON files(thread_id);

        ALTER TABLE messages ADD COLUMN audio_file_id TEXT
            REFERENCES files(id) ON DELETE SET NULL;
        ALTER TABLE messages ADD COLUMN speak INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE messages ADD COLUMN audio_in_seconds REAL NOT NULL DEFAULT 0;
        ALTER TABLE messages ADD COLUMN speech_chars INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE messages ADD COLUMN speech_seconds REAL NOT NULL DEFAULT 0;
        """,
    ),
)
