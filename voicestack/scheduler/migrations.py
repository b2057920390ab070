"""The scheduler's table, as core migrations that follow the agent's."""

from __future__ import annotations

from voicestack.store.migrations import Migration

SCHEDULER_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        # Scheduled work is rows, so it survives restarts and Litestream replicates it. A job is
        # either a function job (a mutation or action the scheduler runs by name) or a reply job
        # (the durable record of one assistant reply, run by the reply runner). Jobs keep every
        # attempt's count and the last error; a cron key marks the one open run of a declared
        # schedule. Text ids like the agent's; the rowid stays for the update hook.
        "scheduler_jobs",
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL DEFAULT 'function' CHECK (kind IN ('function', 'reply')),
            name TEXT NOT NULL,
            args TEXT NOT NULL DEFAULT 'null',
            ref TEXT,
            run_at REAL NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (
                status IN ('pending', 'running', 'done', 'failed', 'cancelled', 'interrupted')
            ),
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL DEFAULT 3,
            last_error TEXT,
            claimed_by TEXT,
            cron_key TEXT,
            user_id TEXT,
            user_name TEXT,
            user_role TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL
        );
        -- The scheduler asks for the next due function job after every commit and every run.
        CREATE INDEX jobs_due ON jobs(run_at) WHERE status = 'pending' AND kind = 'function';
        CREATE INDEX jobs_by_ref ON jobs(ref) WHERE ref IS NOT NULL;
        CREATE INDEX jobs_by_created ON jobs(created_at DESC, id);
        CREATE INDEX jobs_ended ON jobs(finished_at) WHERE finished_at IS NOT NULL;
        -- A declared cron schedule has at most one open run, whatever restarts happen.
        CREATE UNIQUE INDEX jobs_open_cron ON jobs(cron_key)
            WHERE cron_key IS NOT NULL AND status IN ('pending', 'running');

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
        """,
    ),
)
