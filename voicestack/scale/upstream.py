"""An edge's upstreams: one stream on a primary per distinct subscription, shared by every
client of this edge that watches it.

A watch upstream keeps the newest event of each subscription, so that a client joining late
gets the current values at once, and a resync (after the primary or NATS came back) sends
clients only what changed meanwhile. A thread's upstream, shared by clients of any
credentials, is voicestack/scale/feed_upstream.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator

from voicestack import jsoncodec
from voicestack.reactive.channel import Outbox
from voicestack.reactive.wire import http_chunk
from voicestack.scale.envelope import RequestEnvelope, ResponseEnvelope
from voicestack.scale.link import EdgeLink, PrimaryUnavailable
from voicestack.scale.primary import END_STOPPING

log = logging.getLogger(__name__)

RESYNC_WAIT_S = 0.5
RESYNC_MAX_WAIT_S = 5.0
# Primaries chosen in turn (each passed over once it fails) before any primary is asked.
CHOICES = 2
# Answers to a reopening that end the stream: the viewer may no longer see it.
FINAL_REFUSALS = frozenset({400, 401, 403, 404, 410, 422})


def sse_events(chunk: bytes) -> Iterator[tuple[int | None, bytes, bytes]]:
    """Each event in a chunk of SSE bytes: (its id, its data line's JSON, the event's bytes);
    comments (keep-alives) are skipped."""
    for block in chunk.split(b"\n\n"):
        if not block or block.startswith(b":"):
            continue
        event_id: int | None = None
        data = b""
        for line in block.split(b"\n"):
            if line.startswith(b"id:"):
                with contextlib.suppress(ValueError):
                    event_id = int(line[3:].strip())
            elif line.startswith(b"data:"):
                data = line[5:].strip()
        yield event_id, data, block + b"\n\n"


class RelayChannel(Outbox):
    """An edge client's outbox of a watch stream: the newest event per subscription, as the
    primary encoded it (a slow client skips to the latest value, as on a single server)."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str | None, bytes] = {}
        self._held: dict[str | None, bytes] = {}

    def push(self, sub_id: str | None, event: bytes) -> None:
        """Make `event` the next thing sent for `sub_id`, replacing an unsent older one."""
        if self.closed:
            return
        if self.held:
            self._held[sub_id] = event
            return
        self._pending[sub_id] = event
        self._wake()

    def _release_held(self) -> None:
        self._pending.update(self._held)
        self._held = {}

    def has_pending(self) -> bool:
        """Whether values wait to be sent by the writer."""
        return bool(self._pending)

    def _has_pending(self) -> bool:
        return bool(self._pending)

    def _take(self) -> bytes:
        pending, self._pending = self._pending, {}
        return b"".join(pending.values())


class Upstream:
    """One stream on a primary and the edge clients it feeds."""

    def __init__(
        self, link: EdgeLink, request: RequestEnvelope, forget: Callable[[Upstream], None]
    ) -> None:
        self.link = link
        self.request = request
        self.primary: str | None = None
        self.stream_id: str | None = None
        self.head = ResponseEnvelope(200)
        self._forget = forget
        self._resync: asyncio.Task[None] | None = None
        self._lost_again = False  # lost once more while resyncing: open it anew
        self._rehome_after = False  # a primary came while resyncing: look again once done
        self.closed = False
        self.opened = False  # a primary has answered an opening with a stream

    def opening(self) -> RequestEnvelope:
        """The request that (re)opens this stream on a primary."""
        return self.request

    def clients(self) -> list[Outbox]:
        """The edge clients this upstream feeds."""
        raise NotImplementedError

    def chosen_primary(self) -> str | None:
        """The primary to open the stream on; None: whichever answers first."""
        return None

    def rehome(self) -> None:
        """Move the stream to the primary it would be opened on now, if that is another one
        (a primary came that every edge now opens it on): as if its primary were lost."""
        if self._resync is not None:
            self._rehome_after = True  # once reopened, where the primaries are then
            return
        chosen = self.chosen_primary()
        if self.primary is not None and chosen not in (None, self.primary):
            self.primary_lost()

    async def open(self) -> ResponseEnvelope:
        """Open (or reopen) the stream on the chosen primary (the next one chosen, if that one
        does not answer), else on whichever answers first; its answer (200: streaming)."""
        opened: tuple[str, ResponseEnvelope] | None = None
        for _ in range(CHOICES):
            chosen = self.chosen_primary()
            if chosen is None:
                break
            with contextlib.suppress(PrimaryUnavailable):  # passed over now: choose again
                opened = await self.link.open(self.opening(), self, chosen)
                break
        stream_id, head = opened or await self.link.open(self.opening(), self)
        if head.status == 200:
            self.stream_id, self.primary, self.head = stream_id, head.primary, head
            self.opened = True
            if self.chosen_primary() not in (None, self.primary):
                # Primaries came or went while it opened: where it belongs now.
                asyncio.get_running_loop().call_soon(self.rehome)
        return head

    def ended(self, reason: str) -> None:
        """The primary ended the stream: resume elsewhere if it is stopping, else end."""
        self.stream_id = None
        if reason == END_STOPPING:
            self.primary_lost()
        else:
            self.close()

    def primary_lost(self) -> None:
        """Reopen the stream once a primary answers; clients stay connected meanwhile."""
        if self.closed or not self.opened:
            return  # an opening still unanswered is judged by its answer
        if self._resync is not None:
            self._lost_again = True
            return
        self._let_go()
        self._resync = asyncio.get_running_loop().create_task(self._reopen())

    def _let_go(self) -> None:
        if self.stream_id is not None:
            old, primary = self.stream_id, self.primary
            self.link.forget_stream(old)
            # If that primary still holds it, it lets go now rather than at its lease's end.
            asyncio.get_running_loop().create_task(self.link.close_stream(old, primary))
        self.stream_id = None
        self.primary = None

    async def _reopen(self) -> None:
        wait = RESYNC_WAIT_S
        try:
            while not self.closed:
                self._lost_again = False
                try:
                    head = await self.open()
                except PrimaryUnavailable:
                    head = None
                if head is not None and head.status == 200:
                    if await self.resynced() and not self._lost_again:
                        self.link.reopens += 1
                        return
                    if self.closed:
                        return
                    self._let_go()  # its primary went away meanwhile: open it anew
                elif head is not None and head.status in FINAL_REFUSALS:
                    # Refused now: the token was revoked or access removed while away.
                    if self.refused(head):
                        continue
                    log.info("a stream could not be resumed (%d); ending it", head.status)
                    self.close()
                    return
                # No primary yet, or a passing refusal (a draining primary, the old stream
                # still counted against the token's limit): try again.
                await asyncio.sleep(wait)
                wait = min(wait * 2, RESYNC_MAX_WAIT_S)
        finally:
            self._resync = None
            if self._rehome_after and not self.closed:
                self._rehome_after = False
                asyncio.get_running_loop().call_soon(self.rehome)

    async def resynced(self) -> bool:
        """The stream reopened after a resync: False when it must be opened anew (its clients
        could not all be settled with its new primary)."""
        return True

    def refused(self, head: ResponseEnvelope) -> bool:
        """A reopening was refused for good: True to try again at once (with other
        credentials), False to end the upstream."""
        return False

    async def settled(self, timeout: float) -> bool:
        """Wait (at most `timeout`) for a resync under way: whether the stream is open now."""
        task = self._resync
        if task is not None:
            await asyncio.wait({task}, timeout=timeout)
        return not self.closed and self.primary is not None

    def close(self) -> None:
        """End every client and let go of the stream."""
        if self.closed:
            return
        self.closed = True
        for outbox in self.clients():
            outbox.close()
        if self._resync is not None:
            self._resync.cancel()
        self._forget(self)
        if self.stream_id is not None:
            stream_id, primary = self.stream_id, self.primary
            self.stream_id = None
            asyncio.get_running_loop().create_task(self.link.close_stream(stream_id, primary))

    def receive(self, chunk: bytes) -> None:
        """A chunk of the stream's SSE bytes, for the clients."""
        raise NotImplementedError

    def frame(self, kind: str, payload: bytes) -> None:
        """Event streams get no WebSocket frames."""


class WatchUpstream(Upstream):
    """A query watch stream (one query, or several by id) shared by this edge's clients."""

    def __init__(
        self,
        link: EdgeLink,
        request: RequestEnvelope,
        forget: Callable[[Upstream], None],
        multi: bool,
    ) -> None:
        super().__init__(link, request, forget)
        self.multi = multi
        # The newest event per subscription: (version, what it says as JSON, its bytes).
        self.latest: dict[str | None, tuple[int, bytes, bytes]] = {}
        self._clients: set[RelayChannel] = set()

    def clients(self) -> list[Outbox]:
        """The edge clients this upstream feeds."""
        return list(self._clients)

    def join(self, outbox: RelayChannel, last_version: int | None) -> None:
        """Feed `outbox` from now on, starting with every value newer than `last_version`."""
        self._clients.add(outbox)
        for sub_id, (version, _, event) in self.latest.items():
            if last_version is None or version > last_version:
                outbox.push(sub_id, event)

    def leave(self, outbox: RelayChannel) -> None:
        """Stop feeding `outbox`; the last client to leave closes the upstream."""
        self._clients.discard(outbox)
        if not self._clients:
            self.close()

    def receive(self, chunk: bytes) -> None:
        """Keep and pass on each event that says something new."""
        for version, data, event in sse_events(chunk):
            if version is None:
                continue
            try:
                body = json.loads(data)
            except ValueError:
                continue
            if not isinstance(body, dict):
                continue
            sub_id = str(body["id"]) if self.multi and "id" in body else None
            said = jsoncodec.dumps(body.get("value", body.get("error")))
            known = self.latest.get(sub_id)
            if known is not None and (known[0] >= version or known[1] == said):
                # Older, or the same value again (a resync's snapshot): nothing new.
                self.latest[sub_id] = (max(known[0], version), known[1], known[2])
                continue
            self.latest[sub_id] = (version, said, event)
            frame = http_chunk(event)
            now = asyncio.get_running_loop().time()
            for outbox in list(self._clients):
                # Straight to an idle client, as a single server does; else its newest value.
                if outbox.has_pending() or not outbox.write_direct(frame, now):
                    outbox.push(sub_id, event)
