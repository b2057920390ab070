"""One frame written to many connections at once, on more than one core.

A large fan-out's time is the kernel's: in a profile of a thread feed with 1,000 subscribers,
83 % of a batch's delivery was spent inside `transport.write`, the send system call of TCP.
Python releases the GIL around `os.write`, so from `PARALLEL_FROM` connections on, helper threads
write to part of the sockets while the event loop's thread writes to the rest, and the loop
thread waits for them before it goes on.

Why this is safe:
- only a plain TCP connection whose transport has nothing buffered is written to this way, so
  its bytes cannot overtake any the transport still holds;
- the loop thread is inside this call the whole time, so no transport writes, closes or reuses
  a socket meanwhile, and no connection's state changes while a helper judges whether it can
  take the frame (claim_socket reads that state and moves the connection's cursor, no more);
- whatever a socket did not take whole (it was full, or the connection is going) is handed to
  its transport afterwards, on the loop thread, where the transport's own error handling applies.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import Protocol, TypeVar

# Below this, handing work to another thread costs more than it saves.
PARALLEL_FROM = 256


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# Threads besides the loop's own: one per further core, up to three. Only where a socket is a
# file descriptor (not on Windows, whose socket handles are not).
HELPERS = max(0, min(3, _usable_cores() - 1)) if os.name == "posix" else 0

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


class FrameTarget(Protocol):
    """A connection a frame can be written to (voicestack.reactive.channel.FeedChannel)."""

    def claim_socket(self, after: int | None, last: int, now: float) -> int:
        """The socket's file descriptor when a frame may be written to it now, past the
        transport, with the byte order kept; the connection then counts as sent up to event
        `last` at `now`. Else -1, and nothing changes."""
        ...

    def put_frame(self, frame: bytes, now: float) -> None:
        """Write `frame` through the connection's transport."""
        ...


Target = TypeVar("Target", bound=FrameTarget)


def parallel(count: int) -> bool:
    """Whether a frame for `count` connections is written with write_claimed."""
    return count >= PARALLEL_FROM and HELPERS > 0


def write_claimed(
    targets: Sequence[Target], frame: bytes, now: float, after: int | None, last: int
) -> list[Target]:
    """Write `frame` straight to the socket of every target that claims it (claim_socket),
    from the loop's thread and the helpers at once (module docstring); a socket that took
    only part of it gets the rest through its transport. Returns, in order, the targets that
    did not claim it, for the caller to send to as it would to a few.

    Each thread judges and writes its share one connection at a time, so that one thread's
    judging runs while the other waits in the kernel. Judging reads the connections' state
    and sets two attributes: safe from a helper because the loop's thread stays in this call.
    """
    size = -(-len(targets) // (HELPERS + 1))
    pool = _helpers()
    futures = []
    try:
        for k in range(1, HELPERS + 1):
            share = targets[k * size : (k + 1) * size]
            futures.append(pool.submit(_claim_and_write, share, frame, now, after, last))
        unclaimed, partial = _claim_and_write(targets[:size], frame, now, after, last)
        for future in futures:
            more_unclaimed, more_partial = future.result()
            unclaimed += more_unclaimed
            partial += more_partial
    finally:
        futures_wait(futures)  # whatever happened, no helper is still writing when the loop goes on
    for target, count in partial:  # the rest of it, after what the socket took
        target.put_frame(frame[count:] if count else frame, now)
    return unclaimed


def _claim_and_write(
    share: Sequence[Target], frame: bytes, now: float, after: int | None, last: int
) -> tuple[list[Target], list[tuple[Target, int]]]:
    """write_claimed for one thread's share: the targets that did not claim the frame, and
    those whose socket took less than all of it, with how much (0 when full or failing)."""
    unclaimed: list[Target] = []
    partial: list[tuple[Target, int]] = []
    whole = len(frame)
    for target in share:
        fd = target.claim_socket(after, last, now)
        if fd < 0:
            unclaimed.append(target)
            continue
        try:
            count = os.write(fd, frame)
        except OSError:  # full, or the connection is going: its transport handles the frame
            count = 0
        if count != whole:
            partial.append((target, count))
    return unclaimed, partial


def _helpers() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(HELPERS, thread_name_prefix="voicestack-fanout")
    return _pool


def plain_socket(transport: asyncio.BaseTransport) -> int:
    """The file descriptor of a plain (not TLS) socket transport, else -1."""
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_extra_info("sslcontext") is not None:
        return -1
    try:
        return int(sock.fileno())
    except (OSError, ValueError):
        return -1
