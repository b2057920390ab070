"""The writes and reads of the `jobs` table: schedule, claim, finish, retry, re-queue.

Every function here runs inside a transaction the caller owns (a mutation's savepoint or one
write of the group commit), so a job and the rows that caused it commit or roll back together.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

from voicestack import jsoncodec
from voicestack.auth.users import user_by_id
from voicestack.functions.cron import DEFAULT_MAX_ATTEMPTS
from voicestack.identity import Caller
from voicestack.ids import new_id
from voicestack.store.db import ReadDB, WriteDB

# Who claimed a job: this process, on this host.
PROCESS_TOKEN = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

JOB_COLUMNS = (
    "id, kind, name, args, ref, run_at, status, attempts, max_attempts, last_error, claimed_by,"
    " cron_key, user_id, user_name, user_role, created_at, started_at, finished_at"
)


@dataclass(frozen=True, slots=True)
class JobRun:
    """One claimed run of a job: what to call, as whom, and which attempt this is (1 first)."""

    id: str
    name: str
    args: Any
    attempt: int
    max_attempts: int
    cron_key: str | None
    user: Caller | None


def new_job_id() -> str:
    """A fresh job id such as `job_24dc0674…` (voicestack.ids)."""
    return new_id("job")


def insert_job(
    db: WriteDB,
    name: str,
    args: Any,
    run_at: float,
    user: Caller | None,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    cron_key: str | None = None,
) -> str:
    """Add a pending function job due at `run_at` (unix seconds); returns its id."""
    job_id = new_job_id()
    db.execute(
        "INSERT INTO jobs(id, kind, name, args, run_at, max_attempts, cron_key, user_id,"
        " user_name, user_role, created_at) VALUES (?, 'function', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            job_id,
            name,
            jsoncodec.dumps(args).decode(),
            run_at,
            max_attempts,
            cron_key,
            user.id if user else None,
            user.name if user else None,
            user.role if user else None,
            time.time(),
        ),
    )
    return job_id


def cancel_job(db: WriteDB, job_id: str) -> bool:
    """Cancel a pending function job; False when it is not pending (running, ended, unknown)."""
    return (
        db.execute(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?"
            " WHERE id = ? AND kind = 'function' AND status = 'pending'",
            (time.time(), job_id),
        ).changes
        == 1
    )


def _caller(db: WriteDB, row: dict[str, Any]) -> Caller | None:
    # The user as they are when the job runs: a role changed since it was scheduled counts.
    if row["user_id"] is None:
        return None
    return user_by_id(db, row["user_id"]) or Caller(
        row["user_id"], row["user_name"] or row["user_id"], row["user_role"] or "user"
    )


def claim_due(db: WriteDB, limit: int) -> list[JobRun]:
    """Mark up to `limit` due function jobs running for this process and return them."""
    stamp = time.time()
    rows = db.all(
        "SELECT id, name, args, attempts, max_attempts, cron_key, user_id, user_name, user_role"
        " FROM jobs WHERE status = 'pending' AND kind = 'function' AND run_at <= ?"
        " ORDER BY run_at, created_at LIMIT ?",
        (stamp, limit),
    )
    runs = []
    for row in rows:
        db.execute(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, claimed_by = ?,"
            " started_at = ? WHERE id = ?",
            (PROCESS_TOKEN, stamp, row["id"]),
        )
        runs.append(
            JobRun(
                row["id"],
                row["name"],
                json.loads(row["args"]),
                row["attempts"] + 1,
                row["max_attempts"],
                row["cron_key"],
                _caller(db, row),
            )
        )
    return runs


def next_due(db: ReadDB | WriteDB) -> float | None:
    """When the earliest pending function job is due (unix seconds), or None."""
    due: float | None = db.scalar(
        "SELECT min(run_at) FROM jobs WHERE status = 'pending' AND kind = 'function'"
    )
    return due


def complete_job(db: WriteDB, job_id: str) -> bool:
    """Mark this process's run of a job done; False when it no longer holds the job."""
    return (
        db.execute(
            "UPDATE jobs SET status = 'done', finished_at = ?"
            " WHERE id = ? AND status = 'running' AND claimed_by = ?",
            (time.time(), job_id, PROCESS_TOKEN),
        ).changes
        == 1
    )


def backoff_s(attempt: int, base_s: float) -> float:
    """The wait before the attempt after `attempt`: doubling from `base_s`, at most 5 min."""
    return min(base_s * 2.0 ** (attempt - 1), 300.0)


def fail_attempt(db: WriteDB, run: JobRun, error: str, base_s: float) -> bool:
    """Record a failed attempt: pending again after a backoff, or failed for good when it was the
    last; returns True when the job failed for good."""
    stamp = time.time()
    if run.attempt < run.max_attempts:
        db.execute(
            "UPDATE jobs SET status = 'pending', run_at = ?, last_error = ?"
            " WHERE id = ? AND status = 'running' AND claimed_by = ?",
            (stamp + backoff_s(run.attempt, base_s), error, run.id, PROCESS_TOKEN),
        )
        return False
    db.execute(
        "UPDATE jobs SET status = 'failed', last_error = ?, finished_at = ?"
        " WHERE id = ? AND status = 'running' AND claimed_by = ?",
        (error, stamp, run.id, PROCESS_TOKEN),
    )
    return True


def requeue_running(
    db: WriteDB, reason: str, ids: list[str] | None = None
) -> list[tuple[str | None, bool]]:
    """Put function jobs left running (all, or `ids` of this process) back to pending, due now;
    one whose last attempt it was fails with `reason`. Returns (cron key, failed) per job."""
    stamp = time.time()
    if ids is None:
        rows = db.all(
            "SELECT id, attempts, max_attempts, cron_key FROM jobs"
            " WHERE status = 'running' AND kind = 'function'"
        )
    else:
        rows = [
            row
            for job_id in ids
            for row in db.all(
                "SELECT id, attempts, max_attempts, cron_key FROM jobs"
                " WHERE id = ? AND status = 'running' AND claimed_by = ?",
                (job_id, PROCESS_TOKEN),
            )
        ]
    outcomes = []
    for row in rows:
        error = f"interrupted: {reason} during attempt {row['attempts']}."
        failed = row["attempts"] >= row["max_attempts"]
        if failed:
            db.execute(
                "UPDATE jobs SET status = 'failed', last_error = ?, finished_at = ? WHERE id = ?",
                (error, stamp, row["id"]),
            )
        else:
            db.execute(
                "UPDATE jobs SET status = 'pending', run_at = ?, last_error = ? WHERE id = ?",
                (stamp, error, row["id"]),
            )
        outcomes.append((row["cron_key"], failed))
    return outcomes


def prune_finished(db: WriteDB, before: float) -> int:
    """Delete jobs that ended before `before` (unix seconds); returns how many."""
    return db.execute(
        "DELETE FROM jobs WHERE status IN ('done', 'failed', 'cancelled', 'interrupted')"
        " AND finished_at < ?",
        (before,),
    ).changes


def list_jobs(
    db: ReadDB, status: str | None, name: str | None, user_id: str | None, limit: int
) -> list[dict[str, Any]]:
    """The newest jobs first, optionally only of one status, function name or user."""
    where, params = [], []
    for column, value in (("status", status), ("name", name), ("user_id", user_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = db.all(
        f"SELECT {JOB_COLUMNS} FROM jobs {clause} ORDER BY created_at DESC, id DESC LIMIT ?",
        [*params, limit],
    )
    return [job_from_row(row) for row in rows]


def job_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it."""
    return {
        "id": row["id"],
        "kind": row["kind"],
        "name": row["name"],
        "args": json.loads(row["args"]),
        "ref": row["ref"],
        "runAt": row["run_at"],
        "status": row["status"],
        "attempts": row["attempts"],
        "maxAttempts": row["max_attempts"],
        "lastError": row["last_error"],
        "claimedBy": row["claimed_by"],
        "cronKey": row["cron_key"],
        "userId": row["user_id"],
        "createdAt": row["created_at"],
        "startedAt": row["started_at"],
        "finishedAt": row["finished_at"],
    }
