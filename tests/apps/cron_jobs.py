"""tests/apps/jobs.py with a cron schedule that records a run every second."""

from __future__ import annotations

from tests.apps.jobs import MIGRATIONS, record_run, runs  # noqa: F401  (the app's functions)
from voicestack import Cron

CRONS = [Cron("* * * * * *", "jobs.record", {"tag": "tick"})]
