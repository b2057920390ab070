"""Writes committed on the event loop's own thread (voicestack/store/loop_commits.py): together
per loop turn, only when nothing else writes, with checkpoints left to the writer thread."""

from __future__ import annotations

import asyncio
import threading
import time

import anyio
import apsw
import pytest

from tests.support.store import WriterHold, insert, names, open_store
from voicestack.functions.context import MutationCtx
from voicestack.functions.registry import mutation
from voicestack.functions.timings import QUICK_S, MutationTimings
from voicestack.runtime import Runtime
from voicestack.store.loop_commits import MAX_LOOP_BATCH, SLOW_BUDGET_S

PAGE = 4096


def on_thread(name: str):
    """A write of `name` that answers which thread ran it."""

    def write(db) -> int:
        db.execute("INSERT INTO items(name) VALUES (?)", (name,))
        return threading.get_ident()

    return write


@pytest.mark.anyio
async def test_writes_of_one_loop_turn_commit_together_on_the_loop(store):
    before = store.writer.stats.on_loop
    results = await asyncio.gather(*(store.write(on_thread(n), on_loop=True) for n in "abc"))
    assert {r.value for r in results} == {threading.get_ident()}
    assert len({r.version for r in results}) == 1
    assert store.writer.stats.on_loop == before + 1
    assert sorted(names(store)) == ["a", "b", "c"]


@pytest.mark.anyio
async def test_a_turn_with_too_many_writes_leaves_them_to_the_writer_thread(store):
    many = [store.write(on_thread(f"{n:03d}"), on_loop=True) for n in range(MAX_LOOP_BATCH + 1)]
    results = await asyncio.gather(*many)
    assert threading.get_ident() not in {r.value for r in results}
    assert len(names(store)) == MAX_LOOP_BATCH + 1


@pytest.mark.anyio
async def test_a_failing_write_on_the_loop_rolls_back_alone(store):
    def fail(db):
        db.execute("INSERT INTO items(name) VALUES ('doomed')")
        raise ValueError("refused")

    results = await asyncio.gather(
        store.write(insert("kept"), on_loop=True),
        store.write(fail, on_loop=True),
        return_exceptions=True,
    )
    assert isinstance(results[1], ValueError)
    assert names(store) == ["kept"]


@pytest.mark.anyio
async def test_a_write_given_up_before_the_loops_commit_never_runs(store):
    ran: list[str] = []

    def given_up(db):
        ran.append("given up")

    abandoned = asyncio.ensure_future(store.write(given_up, on_loop=True))
    await asyncio.sleep(0)  # queued for this turn's commit
    abandoned.cancel()
    assert (await store.write(insert("kept"), on_loop=True)).version > 0
    assert ran == []


@pytest.mark.anyio
async def test_a_busy_writer_thread_takes_the_loops_writes_in_order(store):
    hold = WriterHold(store)
    queued = asyncio.ensure_future(store.write(on_thread("queued")))
    await asyncio.sleep(0)
    later = asyncio.ensure_future(store.write(on_thread("later"), on_loop=True))
    await asyncio.sleep(0.05)
    assert not later.done()
    hold.release()
    first, second = await queued, await later
    assert first.value == second.value != threading.get_ident()  # both on the writer thread
    assert first.version <= second.version
    assert names(store) == ["queued", "later"]


@pytest.mark.anyio
async def test_a_writer_outside_voicestack_never_stalls_the_loop(store):
    # Another connection holds SQLite's write lock: the loop must not wait in the busy
    # handler, so the write goes to the writer thread, which waits there instead.
    other = apsw.Connection(str(store.path))
    other.execute("BEGIN IMMEDIATE")
    try:
        write = asyncio.ensure_future(store.write(on_thread("after"), on_loop=True))
        started = time.monotonic()
        await asyncio.sleep(0.1)
        assert time.monotonic() - started < 0.5  # the loop kept turning
        assert not write.done()
    finally:
        other.execute("COMMIT")
        other.close()
    with anyio.fail_after(5):
        assert (await write).value != threading.get_ident()
    assert names(store) == ["after"]


def _pages_of_rows(count: int = 1500) -> list[list[tuple[str]]]:
    """Batches of 100 rows, each about a page: more pages than SQLite's WAL threshold."""
    return [[("x" * (PAGE - 100),)] * 100 for _ in range(count // 100)]


def test_checkpoints_follow_sqlites_threshold_unless_litestream_owns_them(tmp_path):
    own = open_store(tmp_path / "own.db")
    handed_over = open_store(tmp_path / "litestream.db", autocheckpoint=False)
    try:
        for store in (own, handed_over):
            for rows in _pages_of_rows():
                store.write_sync(_insert_many(rows))
            store.write_sync(lambda db: None)  # after the checkpoint its commit asked for
        assert (tmp_path / "own.db").stat().st_size > 1000 * PAGE
        assert (tmp_path / "litestream.db").stat().st_size < 100 * PAGE
    finally:
        own.close()
        handed_over.close()


@pytest.mark.anyio
async def test_a_loop_that_fills_the_wal_leaves_the_checkpoint_to_the_writer_thread(tmp_path):
    store = open_store(tmp_path / "loop.db")
    checkpointed_on: list[int] = []
    checkpoint = store.writer._checkpoint

    def record() -> None:
        checkpointed_on.append(threading.get_ident())
        checkpoint()

    store.writer._checkpoint = record  # type: ignore[method-assign]
    try:
        for rows in _pages_of_rows():
            await store.write(_insert_many(rows), on_loop=True)
        store.write_sync(lambda db: None)
        assert store.writer.stats.on_loop >= 10  # the rest came while a checkpoint ran
        assert checkpointed_on
        assert threading.get_ident() not in checkpointed_on
        assert (tmp_path / "loop.db").stat().st_size > 1000 * PAGE
    finally:
        store.close()


def _insert_many(rows):
    return lambda db: db.executemany("INSERT INTO items(name) VALUES (?)", rows)


@pytest.mark.anyio
async def test_a_mutation_commits_on_the_loop_once_it_is_known_to_be_quick(rt: Runtime):
    stats = rt.store.writer.stats
    await rt.mutation("threads.create", {"title": "first"}, None)
    assert stats.on_loop == 0  # its first run: how long it takes is not known yet
    # A few runs bring its average under the mark (the first ones, on a cold start, are slow);
    # the server's own writes may take the writer at the same moment as some of them.
    for n in range(20):
        await rt.mutation("threads.create", {"title": f"thread {n}"}, None)
    assert stats.on_loop >= 1


@mutation("tests.slowish")
def slowish(ctx: MutationCtx) -> int:
    """Slower than quick, well within the budget for slower mutations; answers its thread."""
    deadline = time.perf_counter() + QUICK_S * 1.6
    while time.perf_counter() < deadline:
        pass
    return threading.get_ident()


@pytest.mark.anyio
async def test_a_slower_mutation_commits_on_the_loop_once_its_average_is_known(rt: Runtime):
    rt.registry.add(slowish)
    first = await rt.mutation("tests.slowish", None, None)
    assert first.value != threading.get_ident()  # its first run: the writer thread
    # Alone in its loop turn, it keeps to the budget; the server's own writes may take the
    # writer at the same moment as some of the runs.
    later = [(await rt.mutation("tests.slowish", None, None)).value for _ in range(10)]
    assert threading.get_ident() in later


def test_a_mutation_moves_between_the_loop_and_the_writer_thread_with_its_average():
    timings = MutationTimings()
    assert timings.loop_cost("m") is None  # not run yet: the writer thread
    timings.record("m", QUICK_S / 10)
    assert timings.loop_cost("m") == 0.0  # quick
    for _ in range(3):
        timings.record("m", SLOW_BUDGET_S * 20)
    assert timings.loop_cost("m") is None  # slow: the writer thread
    for _ in range(20):
        timings.record("m", SLOW_BUDGET_S / 2)
    cost = timings.loop_cost("m")
    assert cost is not None  # slower, within the budget
    assert QUICK_S < cost <= SLOW_BUDGET_S


@pytest.mark.anyio
async def test_slower_mutations_share_the_loop_within_their_budget(store):
    lone = await store.write(on_thread("lone"), on_loop=True, slow_s=SLOW_BUDGET_S / 2)
    assert lone.value == threading.get_ident()
    # Three that add up past the budget, gathered in one turn: the writer thread takes them.
    over = await asyncio.gather(
        *(
            store.write(on_thread(n), on_loop=True, slow_s=SLOW_BUDGET_S / 2)
            for n in ("a", "b", "c")
        )
    )
    assert all(result.value != threading.get_ident() for result in over)
    # Quick ones beside a slower one count nothing against the budget.
    mixed = await asyncio.gather(
        store.write(on_thread("slow"), on_loop=True, slow_s=SLOW_BUDGET_S * 0.9),
        *(store.write(on_thread(f"q{n}"), on_loop=True) for n in range(10)),
    )
    assert all(result.value == threading.get_ident() for result in mixed)
    assert len(names(store)) == 15


@pytest.mark.anyio
async def test_closing_the_store_commits_the_writes_gathered_on_the_loop(tmp_path):
    store = open_store(tmp_path / "closing.db")
    gathered = asyncio.ensure_future(store.write(insert("gathered"), on_loop=True))
    await asyncio.sleep(0)  # the task has asked; the loop's commit has not run yet
    store.close()
    assert (await gathered).version > 0
    reopened = open_store(tmp_path / "closing.db")
    try:
        assert names(reopened) == ["gathered"]
    finally:
        reopened.close()


@pytest.mark.anyio
async def test_a_write_after_the_writer_stopped_is_refused_not_lost(store):
    store.writer.stop()
    with pytest.raises(RuntimeError, match="not running"):
        await store.write(insert("late"), on_loop=True)
    with pytest.raises(RuntimeError, match="not running"):
        await store.write(insert("late"))
