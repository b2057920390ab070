"""The delta coalescer: streamed tokens become a few commits per second, cut at word boundaries.

Text is flushed as soon as a sentence ends, and otherwise every `flush_ms` at the last word
boundary, whichever comes first: never one commit per token, never one commit per reply. A timer
flushes complete words even while the model pauses, so watchers never wait on a silent stream.

At most one flush runs at a time, beside the stream rather than in its way: text that arrives
while a piece commits waits in the buffer and leaves with the next piece. A slow commit therefore
makes the pieces bigger, never the stream slower, and never the pieces smaller.
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
        self._timer: asyncio.TimerHandle | None = None
        self._running: asyncio.Task[None] | None = None
        self._closing = False
        self._quiet = False
        self.flushes = 0
        self.error: BaseException | None = None

    @property
    def pending(self) -> str:
        """Text received but not flushed yet."""
        return self._buffer

    async def add(self, text: str) -> None:
        """Take streamed text; starts a flush when a sentence ends or the interval has passed.

        Never waits for a commit: a flush that fails is raised by the next add() or close().
        """
        if self.error is not None:
            raise self.error
        self._buffer += text
        self._next()

    def _due(self) -> int:
        """Where the buffer should be cut now (0: not yet)."""
        cut = _last_boundary(_SENTENCE_END, self._buffer)
        if not cut and self._clock() - self._last_flush >= self._interval:
            cut = _last_boundary(_WORD_END, self._buffer)
        return cut

    def _next(self) -> None:
        """Start the flush that is due unless one runs (it looks again when it ends)."""
        if self._running is not None or self._closing or self._quiet or self.error is not None:
            return
        cut = self._due()
        if cut:
            self._start(cut)
        elif self._buffer:
            self._arm_timer()

    def _start(self, cut: int) -> None:
        text, self._buffer = self._buffer[:cut], self._buffer[cut:]
        self._last_flush = self._clock()
        self.flushes += 1
        self._disarm_timer()
        self._running = asyncio.ensure_future(self._run(text))

    async def _run(self, text: str) -> None:
        try:
            await self._flush(text)
        except Exception as exc:  # surfaced to the reply on its next add() or close()
            self.error = exc
        finally:
            self._running = None
        self._next()

    async def close(self) -> None:
        """Flush everything that is left, partial word included, and stop the timer."""
        self._closing = True
        try:
            text = await self.take_rest()
            if text:
                await self._flush(text)
        finally:
            self._closing = False

    async def take_rest(self) -> str:
        """Stop the timer, wait for the flush that runs, and hand over the text still buffered
        (partial word included) for the caller to save itself, counted as one more flush.

        The reply's last piece is saved this way in the commit that ends the reply, so that a
        watcher gets both in one batch. Raises what a failed flush raised, as close() does.
        """
        self._disarm_timer()
        closing, self._closing = self._closing, True
        try:
            while self._running is not None:
                await asyncio.wait([self._running])
        finally:
            self._closing = closing
        if self.error is not None:
            raise self.error
        text, self._buffer = self._buffer, ""
        if text:
            self._last_flush = self._clock()
            self.flushes += 1
        return text

    def give_back(self, text: str) -> None:
        """Put text handed over by take_rest() back in front of the buffer (it was not saved)."""
        self._buffer = text + self._buffer
        self.flushes -= 1

    def discard_timer(self) -> None:
        """Stop the timer and start no more flushes on our own (the reply is being stopped)."""
        self._quiet = True
        self._disarm_timer()

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
        if self._running is not None or self._closing or self._quiet:
            return
        cut = _last_boundary(_WORD_END, self._buffer)
        if cut:
            self._start(cut)
