"""The delta coalescer cuts streamed text into word/sentence pieces without ever blocking it."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from voicestack.agent.stream import DeltaCoalescer

pytestmark = pytest.mark.anyio


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_sentence_end_flushes_at_once_and_keeps_the_rest() -> None:
    pieces: list[str] = []

    async def flush(text: str) -> None:
        pieces.append(text)

    clock = Clock()
    coalescer = DeltaCoalescer(flush, flush_ms=50, clock=clock)
    for token in ["Hello", " there", ".", " And", " more"]:
        await coalescer.add(token)
        await settle()
    assert pieces == ["Hello there. "]
    assert coalescer.pending == "And more"
    await coalescer.close()
    assert pieces == ["Hello there. ", "And more"]


async def test_words_wait_for_the_interval_and_are_cut_at_a_word_boundary() -> None:
    pieces: list[str] = []

    async def flush(text: str) -> None:
        pieces.append(text)

    clock = Clock()
    coalescer = DeltaCoalescer(flush, flush_ms=50, clock=clock)
    await coalescer.add("one two")
    await settle()
    assert pieces == []
    clock.now = 0.06
    await coalescer.add(" thr")
    await settle()
    assert pieces == ["one two "]
    assert coalescer.pending == "thr"
    await coalescer.close()
    assert "".join(pieces) == "one two thr"


async def test_the_stream_never_waits_for_a_commit_and_the_next_piece_takes_what_came() -> None:
    pieces: list[str] = []
    release = asyncio.Event()

    async def slow_flush(text: str) -> None:
        pieces.append(text)
        await release.wait()

    coalescer = DeltaCoalescer(slow_flush, flush_ms=50)
    with anyio.fail_after(1):
        await coalescer.add("First sentence. ")
        await settle()
        for token in ["Second", " one.", " Third", " one. "]:
            await coalescer.add(token)  # returns although the first commit is still running
    assert pieces == ["First sentence. "]
    release.set()
    await settle()
    assert pieces == ["First sentence. ", "Second one. Third one. "]
    await coalescer.close()
    assert "".join(pieces) == "First sentence. Second one. Third one. "


async def test_the_timer_flushes_complete_words_while_the_model_pauses() -> None:
    pieces: list[str] = []

    async def flush(text: str) -> None:
        pieces.append(text)

    coalescer = DeltaCoalescer(flush, flush_ms=20)
    await coalescer.add("waiting for the next wo")
    with anyio.fail_after(1):
        while not pieces:
            await asyncio.sleep(0.005)
    assert pieces == ["waiting for the next "]
    await coalescer.close()
    assert pieces == ["waiting for the next ", "wo"]


async def test_a_failed_commit_is_raised_by_the_next_call() -> None:
    async def failing(_text: str) -> None:
        raise RuntimeError("disk full")

    coalescer = DeltaCoalescer(failing, flush_ms=50)
    await coalescer.add("A sentence. ")
    await settle()
    with pytest.raises(RuntimeError, match="disk full"):
        await coalescer.add("more")


async def test_the_rest_is_handed_over_after_the_running_flush_and_never_flushed() -> None:
    pieces: list[str] = []
    committing = asyncio.Event()

    async def flush(text: str) -> None:
        await committing.wait()
        pieces.append(text)

    coalescer = DeltaCoalescer(flush, flush_ms=50, clock=Clock())
    await coalescer.add("Done here. And the last wor")
    await settle()
    taking = asyncio.ensure_future(coalescer.take_rest())
    await settle()
    assert not taking.done()  # the first piece is still being committed
    committing.set()
    assert await taking == "And the last wor"
    assert pieces == ["Done here. "]
    assert (coalescer.pending, coalescer.flushes) == ("", 2)
    await coalescer.close()
    assert pieces == ["Done here. "]
