"""How long each mutation takes to run, to tell where it commits: the quick ones on the event
loop's own thread (Store.write's `on_loop`), with the others of a loop turn; one a little slower
there too, as long as the slower ones of that turn stay within the loop's budget for them
(voicestack/store/loop_commits.py, SLOW_BUDGET_S); a long one on the writer thread, beside the
loop (apsw lets go of the GIL inside SQLite), where it holds up no stream's events."""

from __future__ import annotations

from voicestack.store.loop_commits import SLOW_BUDGET_S

# A mutation whose recent runs averaged under this is quick: about what handing it to the writer
# thread and back costs. Any number of quick ones (up to MAX_LOOP_BATCH) may share a loop turn.
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
