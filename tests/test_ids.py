"""Row ids: a prefix and 20 hex digits, the time first, never repeated by one process."""

from __future__ import annotations

import re
import threading
import time

from voicestack.ids import new_id


def test_an_id_is_its_prefix_and_twenty_hex_digits() -> None:
    assert re.fullmatch(r"thr_[0-9a-f]{20}", new_id("thr"))


def test_ids_begin_with_the_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id("msg")
    after = time.time_ns() // 1_000_000
    stamp = int(made[4:13], 16)
    assert before % 2**36 <= stamp <= after % 2**36


def test_an_id_made_in_a_later_millisecond_sorts_after() -> None:
    first = new_id("msg")
    time.sleep(0.002)
    assert new_id("msg") > first


def test_ids_made_within_one_millisecond_never_repeat() -> None:
    made = [new_id("job") for _ in range(20_000)]
    per_millisecond: dict[str, int] = {}
    for one in made:
        per_millisecond[one[4:13]] = per_millisecond.get(one[4:13], 0) + 1
    assert max(per_millisecond.values()) > 1
    assert len(set(made)) == len(made)


def test_ids_made_on_several_threads_at_once_never_repeat() -> None:
    made: list[list[str]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def make(into: list[str]) -> None:
        start.wait()
        into.extend(new_id("call") for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [one for batch in made for one in batch]
    assert len(set(every)) == len(every) == 20_000
