"""What an edge knows of the primaries (voicestack/scale/primaries.py): which are live, which
one is a thread's home, and when a primary's coming asks the edge to move its threads."""

from __future__ import annotations

from collections import Counter

from voicestack.scale.primaries import FORGET_S, Primaries, home_primary
from voicestack.scale.subjects import PRIMARY_GONE_S


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_every_edge_picks_the_same_home_and_a_new_primary_takes_only_its_share() -> None:
    threads = [f"thr_{n:04d}" for n in range(2000)]
    two = {t: home_primary(t, ["a", "b"]) for t in threads}
    assert two == {t: home_primary(t, ["b", "a"]) for t in threads}  # whatever the order
    spread = Counter(two.values())
    assert 800 < spread["a"] < 1200
    three = {t: home_primary(t, ["a", "b", "c"]) for t in threads}
    moved = [t for t in threads if three[t] != two[t]]
    assert all(three[t] == "c" for t in moved)  # only to the newcomer
    assert 450 < len(moved) < 900
    assert home_primary("thr_x", []) is None


def test_live_primaries_say_hello_serve_and_answer() -> None:
    clock = Clock()
    primaries = Primaries(clock)
    primaries.hello("a")
    primaries.hello("b")
    assert sorted(primaries.live()) == ["a", "b"]
    primaries.hello("b", serving=False)  # draining: its streams live on, no new ones
    assert primaries.live() == ["a"]
    assert primaries.home("thr_1") == "a"
    primaries.unanswered("a")  # did not answer an opening: passed over for a while
    assert primaries.live() == []
    clock.now += PRIMARY_GONE_S + 0.1
    primaries.hello("b")
    assert primaries.live() == ["b"]  # a's hellos stopped meanwhile
    assert primaries.gone("a")
    assert not primaries.gone("b")
    assert not primaries.gone("never heard of")
    assert primaries.heard == 2


def test_a_primary_that_comes_comes_back_or_serves_again_asks_to_move_threads() -> None:
    clock = Clock()
    primaries = Primaries(clock)
    changes: list[list[str]] = []
    primaries.on_change.append(lambda: changes.append(sorted(primaries.live())))
    primaries.hello("a")
    primaries.hello("a")  # nothing new
    primaries.hello("b", serving=False)  # not serving: nothing to move to it
    assert changes == [["a"]]
    primaries.hello("b")
    assert changes == [["a"], ["a", "b"]]
    clock.now += PRIMARY_GONE_S + 0.1
    primaries.hello("a")  # back after a silence (a NATS outage, say)
    assert changes[-1] == ["a"]
    assert len(changes) == 3
    primaries.hello("a", serving=False)  # draining
    primaries.hello("a")  # serving again (a drain called off)
    assert len(changes) == 4


def test_a_home_passed_over_takes_its_threads_back_later_and_later_if_it_keeps_failing() -> None:
    clock = Clock()
    primaries = Primaries(clock)
    changes: list[float] = []
    primaries.on_change.append(lambda: changes.append(clock.now))
    primaries.hello("a")
    primaries.unanswered("a")
    primaries.hello("a")
    assert primaries.live() == []
    clock.now += PRIMARY_GONE_S + 0.1
    primaries.hello("a")  # its pass-over ran out: live again, and its threads go back
    assert primaries.live() == ["a"]
    assert len(changes) == 2
    primaries.unanswered("a")  # failing again, in a row: passed over twice as long
    clock.now += PRIMARY_GONE_S + 0.1
    primaries.hello("a")
    assert primaries.live() == []
    clock.now += PRIMARY_GONE_S
    primaries.hello("a")
    assert primaries.live() == ["a"]
    primaries.answered("a")  # an opening answered: the next failure counts from one again
    primaries.unanswered("a")
    clock.now += PRIMARY_GONE_S + 0.1
    primaries.hello("a")
    assert primaries.live() == ["a"]


def test_a_primary_that_says_nothing_of_serving_is_nobodys_home() -> None:
    primaries = Primaries()
    primaries.hello("old", serving=False)  # an earlier version's hello: alive all the same
    assert primaries.live() == []
    assert primaries.home("thr_1") is None
    assert not primaries.gone("old")


def test_primaries_silent_for_long_are_forgotten_when_another_comes() -> None:
    clock = Clock()
    primaries = Primaries(clock)
    primaries.hello("old")
    primaries.unanswered("old")
    clock.now += FORGET_S + 1
    primaries.hello("new")  # a restart: a new process id
    assert not primaries.known("old")
    assert primaries.known("new")
    assert primaries.live() == ["new"]
    primaries.hello("old")  # heard of again: counted anew, and live at once
    assert primaries.heard == 3
    assert sorted(primaries.live()) == ["new", "old"]
