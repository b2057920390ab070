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

# Who may see a thread besides its owner (core migration 6, after the users table).
MEMBERSHIP_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        # Who may see a thread besides its owner. The owner is also a row here, so "may this
        # user see this thread" is one indexed lookup; threads made before users existed have
        # no owner and only administrators see them.
        "thread_members",
        """
        CREATE TABLE thread_members (
            thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
            user_id TEXT NOT NULL REFERENCES auth_users(id),
            role TEXT NOT NULL CHECK (role IN ('owner', 'member')),
            added_at REAL NOT NULL,
            PRIMARY KEY (thread_id, user_id)
        );
        CREATE INDEX thread_members_by_user ON thread_members(user_id, thread_id);
        """,
    ),
)

# The reply jobs of the scheduler's `jobs` table: shipped inside core migration 7
# (voicestack.schema composes it with the table).
REPLY_JOBS_SQL = """
        -- Every way a reply ends (its own finish, cancel, hand-off, the start-up sweep of a
        -- crashed process, a drain that ran out of time) finishes its job in the same
        -- transaction, so a reply job can never be left open by a path that forgot it.
        CREATE TRIGGER jobs_follow_reply AFTER UPDATE OF status ON messages
        WHEN NEW.role = 'assistant' AND OLD.status IN ('pending', 'streaming')
            AND NEW.status IN ('complete', 'failed', 'interrupted')
        BEGIN
            UPDATE jobs SET
                status = CASE
                    WHEN NEW.status = 'complete' THEN 'done'
                    WHEN NEW.status = 'failed' THEN 'failed'
                    WHEN NEW.error_code IN ('cancelled', 'handed_off') THEN 'cancelled'
                    ELSE 'interrupted' END,
                last_error = CASE WHEN NEW.error_code IS NULL THEN last_error
                    ELSE NEW.error_code || ': ' || coalesce(NEW.error_message, '') END,
                finished_at = NEW.updated_at
            WHERE kind = 'reply' AND ref = NEW.id AND status IN ('pending', 'running');
        END;

        -- Replies a previous version left unfinished get their job now, like new ones.
        INSERT INTO jobs(id, kind, name, args, ref, run_at, status, attempts, user_id,
                         created_at)
        SELECT 'job_' || lower(hex(randomblob(10))), 'reply', 'agent.reply',
               json_object('messageId', m.id, 'threadId', m.thread_id), m.id, m.created_at,
               CASE m.status WHEN 'streaming' THEN 'running' ELSE 'pending' END,
               CASE m.status WHEN 'streaming' THEN 1 ELSE 0 END, u.author, m.created_at
        FROM messages m LEFT JOIN messages u ON u.id = m.reply_to
        WHERE m.role = 'assistant' AND m.status IN ('pending', 'streaming');
"""

# Full-text search over what was said (core migration 8).
MEMORY_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        # Stemming ("passwords" finds "password") and accent folding; the rebuild indexes the
        # messages saved before this migration.
        "message_search",
        """
        CREATE VIRTUAL TABLE message_search USING fts5(
            text, content='messages', content_rowid='rowid',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER message_search_insert AFTER INSERT ON messages BEGIN
            INSERT INTO message_search(rowid, text) VALUES (new.rowid, new.text);
        END;
        CREATE TRIGGER message_search_delete AFTER DELETE ON messages BEGIN
            INSERT INTO message_search(message_search, rowid, text)
            VALUES ('delete', old.rowid, old.text);
        END;
        CREATE TRIGGER message_search_update AFTER UPDATE OF text ON messages
        WHEN old.text IS NOT new.text BEGIN
            INSERT INTO message_search(message_search, rowid, text)
            VALUES ('delete', old.rowid, old.text);
            INSERT INTO message_search(rowid, text) VALUES (new.rowid, new.text);
        END;
        INSERT INTO message_search(message_search) VALUES ('rebuild');
        """,
    ),
)

# Per-turn latency of live conversations (core migration 9).
VOICE_METRICS_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        # A reply spoken in a live conversation keeps its turn's timings and audio seconds
        # (DESIGN §9 `voice`) as JSON; NULL for a reply that was not a live turn.
        "message_voice_metrics",
        "ALTER TABLE messages ADD COLUMN voice TEXT;",
    ),
)

# Named agents and cost per conversation (core migration 10, DESIGN §8).
AGENT_BINDING_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        # A thread answers as one agent at a time (a handoff changes it); a message records the
        # agent that wrote it (NULL for people's messages). `cost_usd` is fixed when the reply
        # ends, from the price table of that moment, and stays NULL for a model without a price.
        "agent_binding",
        """
        ALTER TABLE threads ADD COLUMN agent TEXT NOT NULL DEFAULT 'assistant';
        ALTER TABLE messages ADD COLUMN agent TEXT;
        ALTER TABLE messages ADD COLUMN model TEXT;
        ALTER TABLE messages ADD COLUMN cost_usd REAL;
        UPDATE messages SET agent = 'assistant' WHERE role = 'assistant';
        """,
    ),
)

# A reply's usage in parts (core migration 11, DESIGN §8).
REPLY_PARTS_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        # A reply that hands off is written by several agents, each on its own model: one part
        # per agent that answered, each priced at its own model, so cost and `usage.summary`
        # by agent or model never price one agent's tokens at another's rates. Usage is written
        # to the part as each step reports it, so a stopped or crashed reply keeps what it used;
        # a step that ended before its provider reported usage is counted in `unreported_steps`
        # (its tokens are unknown). A turn's transcribed audio goes with its first part, speech
        # with the part that was answering. Replies written before this migration get one part.
        "reply_parts",
        """
        CREATE TABLE reply_parts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            agent TEXT,
            model TEXT,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            unreported_steps INTEGER NOT NULL DEFAULT 0,
            tool_calls INTEGER NOT NULL DEFAULT 0,
            audio_in_seconds REAL NOT NULL DEFAULT 0,
            speech_chars INTEGER NOT NULL DEFAULT 0,
            speech_seconds REAL NOT NULL DEFAULT 0,
            cost_usd REAL,
            created_at REAL NOT NULL
        );
        CREATE INDEX reply_parts_by_message ON reply_parts(message_id, id);
        ALTER TABLE messages ADD COLUMN unreported_steps INTEGER NOT NULL DEFAULT 0;

        UPDATE messages SET unreported_steps = 1
        WHERE role = 'assistant' AND reply_to IS NOT NULL AND prompt_tokens = 0
            AND status IN ('complete', 'failed', 'interrupted')
            AND (text != '' OR tool_call_count > 0);
        INSERT INTO reply_parts(message_id, agent, model, prompt_tokens, completion_tokens,
            unreported_steps, tool_calls, audio_in_seconds, speech_chars, speech_seconds,
            cost_usd, created_at)
        SELECT m.id, m.agent, m.model, m.prompt_tokens, m.completion_tokens, m.unreported_steps,
            m.tool_call_count, coalesce(u.audio_in_seconds, 0), m.speech_chars, m.speech_seconds,
            m.cost_usd, m.created_at
        FROM messages m LEFT JOIN messages u ON u.id = m.reply_to
        WHERE m.role = 'assistant' AND m.reply_to IS NOT NULL AND m.status != 'pending';
        """,
    ),
)

# Threads' metadata (core migration 12, DESIGN §10).
THREAD_METADATA_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        # Where a thread came from, as a JSON object each channel fills with its own keys (a
        # phone call's: the caller's number and the call SID); NULL for threads made through
        # the API.
        "thread_metadata",
        "ALTER TABLE threads ADD COLUMN metadata TEXT;",
    ),
)

# Messages indexed for full-text search just after their commit (core migration 18).
SEARCH_INDEX_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        # Indexing a message inside the transaction that saves it wrote three more B-trees before
        # its watchers heard of it. The triggers now only note it; voicestack.agent.search_index
        # indexes what is noted right after. A noted message has nothing in the index, any other
        # its current text, so old words are taken out only when they were put in. Every message
        # saved before this migration is indexed already: nothing is noted. (REPLACE, not
        # IGNORE: noting a noted message again must still show in the commit's changes, which
        # tell the indexer there is work.)
        "search_index_after_commit",
        """
        CREATE TABLE message_search_pending (rowid INTEGER PRIMARY KEY);
        DROP TRIGGER message_search_insert;
        DROP TRIGGER message_search_delete;
        DROP TRIGGER message_search_update;
        CREATE TRIGGER message_search_insert AFTER INSERT ON messages BEGIN
            INSERT OR REPLACE INTO message_search_pending(rowid) VALUES (new.rowid);
        END;
        CREATE TRIGGER message_search_delete AFTER DELETE ON messages BEGIN
            INSERT INTO message_search(message_search, rowid, text)
            SELECT 'delete', old.rowid, old.text
            WHERE NOT EXISTS (SELECT 1 FROM message_search_pending WHERE rowid = old.rowid);
            DELETE FROM message_search_pending WHERE rowid = old.rowid;
        END;
        CREATE TRIGGER message_search_update AFTER UPDATE OF text ON messages
        WHEN old.text IS NOT new.text BEGIN
            INSERT INTO message_search(message_search, rowid, text)
            SELECT 'delete', old.rowid, old.text
            WHERE NOT EXISTS (SELECT 1 FROM message_search_pending WHERE rowid = old.rowid);
            INSERT OR REPLACE INTO message_search_pending(rowid) VALUES (new.rowid);
        END;
        """,
    ),
)

THREAD_POSITION_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        # A new message's place is the thread's last one plus one. Reading it from the thread's
        # row, which the sending mutation has just read, costs less than a seek for the largest
        # position in the messages' index on every send. The trigger keeps it for every insert,
        # a mutation's own SQL included, so a place is never taken twice; a deleted message's
        # place is not given again.
        "thread_last_position",
        """
        ALTER TABLE threads ADD COLUMN last_position INTEGER NOT NULL DEFAULT 0;
        UPDATE threads SET last_position = coalesce(
            (SELECT max(position) FROM messages WHERE thread_id = threads.id), 0);
        CREATE TRIGGER thread_last_position AFTER INSERT ON messages BEGIN
            UPDATE threads SET last_position = NEW.position
            WHERE id = NEW.thread_id AND last_position < NEW.position;
        END;
        """,
    ),
)
