"""The agent's reply jobs: each assistant reply is a row of the scheduler's `jobs` table (kind
`reply`), written in the reply's own transactions, so a crash leaves a durable record of every
reply that was pending or streaming. The scheduler never claims these; the reply runner does.
"""

from __future__ import annotations

import time

from voicestack import jsoncodec
from voicestack.scheduler.jobs import PROCESS_TOKEN, new_job_id
from voicestack.store.db import WriteDB

REPLY_JOB = "agent.reply"


def insert_reply_job(db: WriteDB, message_id: str, thread_id: str, author: str | None) -> str:
    """Add the pending job that records the reply `message_id` until it ends."""
    job_id = new_job_id()
    stamp = time.time()
    db.execute(
        "INSERT INTO jobs(id, kind, name, args, ref, run_at, max_attempts, user_id, created_at)"
        " VALUES (?, 'reply', ?, ?, ?, ?, 1, ?, ?)",
        (
            job_id,
            REPLY_JOB,
            jsoncodec.dumps({"messageId": message_id, "threadId": thread_id}).decode(),
            message_id,
            stamp,
            author,
            stamp,
        ),
    )
    return job_id


def claim_reply_job(db: WriteDB, message_id: str) -> None:
    """Mark the reply's job running, by this process, one attempt more."""
    stamp = time.time()
    db.execute(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, claimed_by = ?,"
        " started_at = ? WHERE kind = 'reply' AND ref = ? AND status = 'pending'",
        (PROCESS_TOKEN, stamp, message_id),
    )


def settle_reply_jobs(db: WriteDB) -> int:
    """Finish reply jobs whose reply is gone or already ended; returns how many.

    Replies normally finish their job themselves (a trigger); this catches a reply deleted with
    its thread while its job was open.
    """
    return db.execute(
        "UPDATE jobs SET status = 'cancelled', finished_at = ?,"
        " last_error = 'gone: the reply no longer exists or had already ended.'"
        " WHERE kind = 'reply' AND status IN ('pending', 'running') AND NOT EXISTS ("
        " SELECT 1 FROM messages m WHERE m.id = jobs.ref AND m.status IN ('pending', 'streaming'))",
        (time.time(),),
    ).changes
