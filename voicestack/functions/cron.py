"""A cron schedule, as an app declares it: `CRONS = [Cron("*/5 * * * *", "reports.send", {})]`.

A declaration only; voicestack.scheduler.cron runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from croniter import croniter

from voicestack import jsoncodec

# How many times a job runs before it is failed for good, unless it says otherwise.
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Cron:
    """Run function `name` with `args` on a cron `schedule`.

    Five fields (minute hour day month weekday), or six with seconds last. Runs have no caller.
    """

    schedule: str
    name: str
    args: Any = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    key: str = field(default="")

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.schedule):
            raise ValueError(f"Cron schedule {self.schedule!r} of {self.name!r} is not valid.")
        if not self.key:
            args = jsoncodec.dumps(self.args).decode()
            object.__setattr__(self, "key", f"{self.schedule}|{self.name}|{args}")

    def next_after(self, moment: float) -> float:
        """The first time (unix seconds) strictly after `moment` this schedule fires."""
        return float(croniter(self.schedule, moment).get_next(float))
