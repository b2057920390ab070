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
)
