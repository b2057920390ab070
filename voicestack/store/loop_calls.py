"""Scheduling a callback on an event loop from whichever thread committed.

Commit listeners run on the committing thread: the writer's, or an event loop's own when it
committed a batch itself (voicestack/store/loop_commits.py). From the loop's own thread a plain
`call_soon` does; `call_soon_threadsafe` would also write to the loop's wake-up file and make its
next turn poll and read it, a few system calls per commit for nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


def on_own_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the calling thread is running `loop`."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:  # a thread without a running loop: the writer's
        return False


def call_soon_on(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> None:
    """Run `callback(*args)` on `loop`'s next turn, from any thread; RuntimeError when `loop` is
    closed."""
    if on_own_loop(loop):
        loop.call_soon(callback, *args)
    else:
        loop.call_soon_threadsafe(callback, *args)
