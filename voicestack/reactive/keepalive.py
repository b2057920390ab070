"""Keep-alive for every open SSE stream, from one task: pings, and cutting stalled clients."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from voicestack.reactive.channel import Outbox

log = logging.getLogger(__name__)


class Streams:
    """The open outboxes: pinged when idle, closed when a client stops reading, ended on shutdown.

    One task serves every stream, instead of a timer per connection: a ping is a flag on the
    outbox, never a write that could block on a stalled client.
    """

    def __init__(self, ping_s: float, send_timeout_s: float) -> None:
        self._ping_s = ping_s
        self._send_timeout_s = send_timeout_s
        self._outboxes: set[Outbox] = set()

    def __len__(self) -> int:
        return len(self._outboxes)

    def add(self, outbox: Outbox) -> Outbox:
        """Start looking after `outbox`."""
        self._outboxes.add(outbox)
        return outbox

    def discard(self, outbox: Outbox) -> None:
        """Close `outbox` and stop looking after it."""
        outbox.close()
        self._outboxes.discard(outbox)

    def close_all(self, which: Callable[[Outbox], bool] | None = None) -> None:
        """End every stream (or those `which` selects) once what is pending has been sent."""
        for outbox in list(self._outboxes):
            if which is None or which(outbox):
                outbox.close()

    async def run(self) -> None:
        """Ping idle streams and cut stalled ones, forever."""
        loop = asyncio.get_running_loop()
        interval = max(0.05, min(self._ping_s, self._send_timeout_s) / 2)
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for outbox in list(self._outboxes):
                since = outbox.sending_since
                if since is not None and now - since > self._send_timeout_s:
                    # A client that stopped reading must not hold the connection forever.
                    log.warning(
                        "cut an event stream whose client read nothing for %.0f s"
                        " (--send-timeout-s)",
                        now - since,
                    )
                    self.discard(outbox)
                    if outbox.abort is not None:
                        outbox.abort()
                elif since is None and now - outbox.last_write >= self._ping_s:
                    outbox.ping()
