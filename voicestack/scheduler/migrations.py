"""The scheduler's table. Its migration is composed in voicestack.schema, with the SQL of the
agent's reply jobs (voicestack.agent.migrations), because both shipped as one core migration."""

from __future__ import annotations

# Scheduled work is rows, so it survives restarts and Litestream replicates it. A job is either a
# function job (a mutation or action the scheduler runs by name) or a job of another kind that
# its owner records and runs itself (the agent's replies: kind 'reply'); the scheduler only ever
# claims function jobs. Jobs keep every attempt's count and the last error; a cron key marks the
# one open run of a declared schedule. Text ids like the agent's; the rowid stays for the update
# hook.
JOBS_TABLE_SQL = """
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

"""
