"""Embedding requests of concurrent jobs share one provider call.

Each call through the OpenAI client costs the event loop a few milliseconds whatever its size,
and the loop also streams every reply: a burst of 20 notes as 20 requests held back deltas
(bench/memory.py). Texts asked for within WINDOW_S of each other go out together, up to
MAX_TEXTS a request; every caller gets its own vectors, or the request's error.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Awaitable, Callable

from voicestack.agent.llm import ProviderError

WINDOW_S = 0.02
MAX_TEXTS = 64

Send = Callable[[list[str]], Awaitable[list["array[float]"]]]
_Waiting = tuple[str, "asyncio.Future[array[float]]"]


def _own_copy(exc: Exception) -> Exception:
    # Each waiting job raises its own exception object, so their tracebacks stay apart.
    if isinstance(exc, ProviderError):
        return type(exc)(exc.code, exc.message, retryable=exc.retryable)
    return exc


class EmbeddingBatcher:
    """Collects texts for WINDOW_S, then sends them as few requests as MAX_TEXTS allows."""

    def __init__(self, send: Send) -> None:
        """`send(texts)` makes one provider request and returns one vector per text."""
        self._send = send
        self._waiting: list[_Waiting] = []
        self._timer: asyncio.TimerHandle | None = None
        self._requests: set[asyncio.Task[None]] = set()

    async def embed(self, texts: list[str]) -> list[array[float]]:
        """One vector per text, in order; raises the error of a request that failed."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[array[float]]] = []
        for text in texts:
            future: asyncio.Future[array[float]] = loop.create_future()
            self._waiting.append((text, future))
            futures.append(future)
        if len(self._waiting) >= MAX_TEXTS:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(WINDOW_S, self._flush)
        return list(await asyncio.gather(*futures))

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_TEXTS], self._waiting[MAX_TEXTS:]
            task = loop.create_task(self._request(batch), name="voicestack-embeddings")
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)

    async def _request(self, batch: list[_Waiting]) -> None:
        try:
            vectors = await self._send([text for text, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(_own_copy(exc))
            return
        for (_, future), vector in zip(batch, vectors, strict=True):
            if not future.done():
                future.set_result(vector)

    async def aclose(self) -> None:
        """Stop the requests under way (their callers get CancelledError)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._requests):
            task.cancel()
        for _, future in self._waiting:
            future.cancel()
        self._waiting.clear()
