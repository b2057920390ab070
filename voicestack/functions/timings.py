"""How long each mutation takes to run, to tell the quick ones: those may commit on the event
loop's own thread (Store.write's `on_loop`), where a slower one would hold up every request."""

from __future__ import annotations

from voicestack.store.loop_commits import SLOW_BUDGET_S

# A mutation runs on the loop while its recent runs averaged under this: about what handing it
# to the writer thread and back costs. A longer one is better run there, beside the loop (apsw
# lets go of the GIL inside SQLite), than on it, delaying every stream's events by as much.
QUICK_S = 0.00025
# Weight of the newest run in the average: a mutation that turns slow leaves the loop within a
# few runs.
NEWEST_WEIGHT = 0.25


class MutationTimings:
    """A running average of each mutation's own run time (not its wait for the commit)."""

    def __init__(self) -> None:
        self._average_s: dict[str, float] = {}

    def loop_cost(self, name: str) -> float | None:
        """How `name` may commit (Store.write): 0.0 quick, on the loop; its average run time
        when slower but within the loop's budget for slower mutations (SLOW_BUDGET_S); None
        on the writer thread (a first run, or a long one)."""
        average = self._average_s.get(name)
        if average is None or average > SLOW_BUDGET_S:
            return None
        return 0.0 if average < QUICK_S else average

    def record(self, name: str, seconds: float) -> None:
        """One run of `name` took `seconds`."""
        average = self._average_s.get(name)
        if average is None:
            self._average_s[name] = seconds
        else:
            self._average_s[name] = average + NEWEST_WEIGHT * (seconds - average)
