"""The tables of semantic memory: notes, embedded chunks, and what the stored vectors are.

The vectors themselves live in a sqlite-vec `vec0` table, `memory_vectors`, whose size is fixed
when it is created; the embedding model decides that size, so the table is made when the server
first knows it (voicestack.agent.memory_index), not here.
"""

from __future__ import annotations

from voicestack.store.migrations import Migration

# Which messages are worth remembering: what people and agents said, once it is final.
_EMBEDDABLE_MESSAGE = (
    "NEW.status = 'complete' AND NEW.role IN ('user', 'assistant') AND NEW.text != ''"
    " AND EXISTS (SELECT 1 FROM memory_index WHERE id = 1 AND active = 1)"
)


# A message's final text: complete, or cut by a barge-in or a cancel (interrupted). A message
# with no text left (cut to nothing) still needs its job when it has chunks: they must go.
_ENDED = "('complete', 'interrupted')"
_FINAL_MESSAGE = (
    f"NEW.status IN {_ENDED} AND NEW.role IN ('user', 'assistant')"
    " AND EXISTS (SELECT 1 FROM memory_index WHERE id = 1 AND active = 1)"
)
_HAS_TEXT_OR_CHUNKS = (
    "(NEW.text != '' OR EXISTS (SELECT 1 FROM memory_chunks WHERE message_id = NEW.id))"
)
# A job still pending reads the text when it runs, so it embeds this change too.
_NO_PENDING_JOB = (
    "NOT EXISTS (SELECT 1 FROM jobs WHERE ref = NEW.id AND name = 'memory.embed'"
    " AND status = 'pending')"
)


def _embed_job(source: str) -> str:
    return (
        "INSERT INTO jobs(id, kind, name, args, ref, run_at, user_id, created_at)"
        " VALUES ('job_' || lower(hex(randomblob(10))), 'function', 'memory.embed',"
        f" json_object('source', '{source}', 'id', NEW.id), NEW.id,"
        " unixepoch('subsec'), NULL, unixepoch('subsec'));"
    )


SEMANTIC_MEMORY_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        # Embeddings of what was said, for semantic search and recall (issue 17). A message is
        # embedded by a scheduled job (`memory.embed`) queued by a trigger in the transaction
        # that completes it, so every way a message completes (a reply's end, a typed or
        # spoken turn, an app's post) queues it, and the reply itself never waits for it.
        # `memory_index` is one row: the model and vector size the stored vectors have (a server
        # configured otherwise refuses to start) and whether this server embeds (`active`).
        # Notes are texts tools and apps ask to remember, a thread's or one user's own. Each
        # chunk keeps the model and size it was embedded with; its vector has the chunk's id.
        # A reply that recalled from other threads (--recall) keeps what it recalled.
        "semantic_memory",
        f"""
        CREATE TABLE memory_index (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            model TEXT,
            dimensions INTEGER,
            active INTEGER NOT NULL DEFAULT 0,
            updated_at REAL NOT NULL
        );
        INSERT INTO memory_index(id, active, updated_at) VALUES (1, 0, unixepoch('subsec'));

        CREATE TABLE memory_notes (
            id TEXT PRIMARY KEY,
            thread_id TEXT REFERENCES threads(id) ON DELETE CASCADE,
            user_id TEXT,
            text TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX memory_notes_by_thread ON memory_notes(thread_id, created_at);
        CREATE INDEX memory_notes_by_user ON memory_notes(user_id, created_at);

        CREATE TABLE memory_chunks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id TEXT REFERENCES messages(id) ON DELETE CASCADE,
            note_id TEXT REFERENCES memory_notes(id) ON DELETE CASCADE,
            thread_id TEXT REFERENCES threads(id) ON DELETE CASCADE,
            owner TEXT NOT NULL,
            seq INTEGER NOT NULL,
            text TEXT NOT NULL,
            model TEXT NOT NULL,
            dimensions INTEGER NOT NULL,
            created_at REAL NOT NULL,
            CHECK ((message_id IS NULL) != (note_id IS NULL))
        );
        CREATE UNIQUE INDEX memory_chunks_of_message ON memory_chunks(message_id, seq)
            WHERE message_id IS NOT NULL;
        CREATE UNIQUE INDEX memory_chunks_of_note ON memory_chunks(note_id, seq)
            WHERE note_id IS NOT NULL;
        CREATE INDEX memory_chunks_by_thread ON memory_chunks(thread_id);

        CREATE VIRTUAL TABLE note_search USING fts5(
            text, content='memory_notes', content_rowid='rowid',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER note_search_insert AFTER INSERT ON memory_notes BEGIN
            INSERT INTO note_search(rowid, text) VALUES (new.rowid, new.text);
        END;
        CREATE TRIGGER note_search_delete AFTER DELETE ON memory_notes BEGIN
            INSERT INTO note_search(note_search, rowid, text)
            VALUES ('delete', old.rowid, old.text);
        END;

        -- What a reply recalled from its user's other threads (JSON, in its `usage`); NULL
        -- for replies without recall.
        ALTER TABLE messages ADD COLUMN recalled TEXT;

        CREATE TRIGGER memory_embed_new_message AFTER INSERT ON messages
        WHEN {_EMBEDDABLE_MESSAGE}
        BEGIN
            {_embed_job("message")}
        END;
        CREATE TRIGGER memory_embed_completed_message AFTER UPDATE OF status ON messages
        WHEN OLD.status != 'complete' AND {_EMBEDDABLE_MESSAGE}
        BEGIN
            {_embed_job("message")}
        END;
        CREATE TRIGGER memory_embed_note AFTER INSERT ON memory_notes
        WHEN EXISTS (SELECT 1 FROM memory_index WHERE id = 1 AND active = 1)
        BEGIN
            {_embed_job("note")}
        END;
        """,
    ),
    Migration(
        # A reply cut by a barge-in or a cancel ends `interrupted` with the text that was heard
        # or streamed, and was never embedded; one cut after it completed kept the vectors of
        # its uncut text. Its final text is what is remembered: a message is embedded when it
        # ends, complete or interrupted, and again whenever its text changes afterwards (the
        # job replaces its chunks, or removes them when no text is left); a change while its
        # job is still pending queues nothing more, since that job reads the text it runs on.
        "memory_embed_final_text",
        f"""
        DROP TRIGGER memory_embed_new_message;
        DROP TRIGGER memory_embed_completed_message;
        CREATE TRIGGER memory_embed_new_message AFTER INSERT ON messages
        WHEN {_FINAL_MESSAGE} AND NEW.text != ''
        BEGIN
            {_embed_job("message")}
        END;
        CREATE TRIGGER memory_embed_ended_message AFTER UPDATE OF status, text ON messages
        WHEN {_FINAL_MESSAGE}
            AND (OLD.status NOT IN {_ENDED} OR OLD.text IS NOT NEW.text)
            AND {_HAS_TEXT_OR_CHUNKS} AND {_NO_PENDING_JOB}
        BEGIN
            {_embed_job("message")}
        END;
        """,
    ),
)
