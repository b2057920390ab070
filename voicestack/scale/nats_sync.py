"""Knowing that the NATS server has what a client sent.

A flush (a PING answered by a PONG) is meant to prove that the server has processed everything
the client sent before it. nats-py (2.16) writes a flush's PING straight to the socket, ahead of
commands still waiting in its buffer for its flusher task, such as a subscription made a moment
before: the PONG can then come back before the server has seen that subscription, and messages
published meanwhile miss it. Two flushes in a row are enough: the first lets the flusher write
what was buffered (it was woken before the PING went out), so the second PING follows it.
"""

from __future__ import annotations

from nats.aio.client import Client


async def settled(nc: Client, timeout: float = 2.0) -> None:
    """Return once the server has processed everything `nc` sent before this call (raises
    nats' FlushTimeoutError after `timeout` seconds for each of the two round trips)."""
    await nc.flush(timeout=int(max(1, timeout)))
    await nc.flush(timeout=int(max(1, timeout)))
