"""The delta coalescer: streamed tokens become a few commits per second, cut at word boundaries.

Text is flushed as soon as a sentence ends, and otherwise every `flush_ms` at the last word
boundary, whichever comes first: never one commit per token, never one commit per reply. A timer
flushes complete words even while the model pauses, so watchers never wait on a silent stream.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

# A sentence ends at . ! ? or … (optionally closed by quotes or brackets) followed by white
# space, or at a line break.
_SENTENCE_END = re.compile(r"""(?:[.!?…]["'”’)\]]*\s+|\n+)""")
_WORD_END = re.compile(r"\s+")


def _last_boundary(pattern: re.Pattern[str], text: str) -> int:
    end = 0
    for match in pattern.finditer(text):
        end = match.end()
    return end


class DeltaCoalescer:
    """Buffers streamed text and hands it to `flush` in word- or sentence-sized pieces, in order."""

    def __init__(
        self,
        flush: Callable[[str], Awaitable[None]],
        flush_ms: float = 50.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._flush = flush
        self._interval = flush_ms / 1000
        self._clock = clock
        self._buffer = ""
        self._last_flush = clock()
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self.flushes = 0
        self.error: BaseException | None = None

    @property
    def pending(self) -> str:
        """Text received but not flushed yet."""
        return self._buffer

    async def add(self, text: str) -> None:
        """Take streamed text; flushes when a sentence ends or the interval has passed."""
        if self.error is not None:
            raise self.error
        self._buffer += text
        if self._due():
            await self._flush_upto(self._due)
        elif self._buffer:
            self._arm_timer()

    def _due(self) -> int:
        """Where the buffer should be cut now (0: not yet)."""
        cut = _last_boundary(_SENTENCE_END, self._buffer)
        if not cut and self._clock() - self._last_flush >= self._interval:
            cut = _last_boundary(_WORD_END, self._buffer)
        return cut

    def _word_cut(self) -> int:
        return _last_boundary(_WORD_END, self._buffer)

    def _everything(self) -> int:
        return len(self._buffer)

    async def close(self) -> None:
        """Flush everything that is left, partial word included, and stop the timer."""
        self._disarm_timer()
        if self._timer_task is not None:
            await asyncio.gather(self._timer_task, return_exceptions=True)
        if self.error is not None:
            raise self.error
        if self._buffer:
            await self._flush_upto(self._everything)

    def discard_timer(self) -> None:
        """Stop the timer without flushing (the reply was cancelled)."""
        self._disarm_timer()

    async def _flush_upto(self, where: Callable[[], int]) -> None:
        # The cut is computed under the lock: another flush may have taken a prefix meanwhile.
        async with self._lock:
            cut = where()
            text, self._buffer = self._buffer[:cut], self._buffer[cut:]
            if not text:
                return
            self._last_flush = self._clock()
            self.flushes += 1
            self._disarm_timer()
            await self._flush(text)
        if self._buffer:
            self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._interval, self._on_timer)

    def _disarm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self._word_cut() and (self._timer_task is None or self._timer_task.done()):
            self._timer_task = asyncio.ensure_future(self._flush_from_timer())

    async def _flush_from_timer(self) -> None:
        try:
            await self._flush_upto(self._word_cut)
        except Exception as exc:  # surfaced to the reply on its next add() or close()
            self.error = exc
