"""Running the cron schedules an app declares (voicestack.functions.cron.Cron).

Each schedule has a key (its expression, function and arguments) and at most one open job per
key in the database: the scheduler makes sure of one at start and queues the next run when a run
ends, so a restart neither doubles a schedule nor loses a run that fell due while it was down (it
runs once, late).
"""

from __future__ import annotations

import time

from voicestack.functions.cron import Cron
from voicestack.scheduler.jobs import insert_job
from voicestack.store.db import WriteDB


def queue_next_run(db: WriteDB, cron: Cron, after: float | None = None) -> str | None:
    """Add the schedule's next run unless one is already open; returns the new job's id."""
    if db.scalar(
        "SELECT 1 FROM jobs WHERE cron_key = ? AND status IN ('pending', 'running')", (cron.key,)
    ):
        return None
    moment = time.time() if after is None else after
    return insert_job(
        db,
        cron.name,
        cron.args,
        cron.next_after(moment),
        None,
        max_attempts=cron.max_attempts,
        cron_key=cron.key,
    )


def sync_crons(db: WriteDB, crons: list[Cron]) -> int:
    """Give every declared schedule its open run and cancel the pending runs of schedules no
    longer declared; returns how many runs were added."""
    keys = [cron.key for cron in crons]
    marks = ",".join("?" * len(keys))
    db.execute(
        "UPDATE jobs SET status = 'cancelled', finished_at = ?,"
        " last_error = 'cancelled: its cron schedule is no longer declared.'"
        f" WHERE cron_key IS NOT NULL AND status = 'pending' AND cron_key NOT IN ({marks})",
        (time.time(), *keys),
    )
    return sum(queue_next_run(db, cron) is not None for cron in crons)
