"""What an edge knows of the primaries (voicestack/scale/primaries.py): which are live, which
one is a thread's home, and when a primary's coming asks the edge to move its threads."""

from __future__ import annotations

from collections import Counter

from voicestack.scale.primaries import Primaries, home_primary
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
