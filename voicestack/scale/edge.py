"""What an edge's routes share: its NATS link, its upstreams by key, its open streams and
how many each credential holds."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
from collections.abc import Awaitable, Callable, Coroutine

from voicestack.config import Settings
from voicestack.reactive.keepalive import Streams
from voicestack.scale.envelope import ResponseEnvelope
from voicestack.scale.errors import error_envelope
from voicestack.scale.link import EdgeLink, PrimaryUnavailable
from voicestack.scale.refused_credentials import RefusedCredentials
from voicestack.scale.upstream import Upstream
from voicestack.voice.session_drain import SessionDrain
from voicestack.voice.telephony.calls import CallSlots

# How long the streams moving to a primary that came are spread over.
REHOME_SPREAD_S = 2.0

MakeUpstream = Callable[[], Awaitable[tuple[Upstream, ResponseEnvelope]]]


class Edge:
    """An edge's state: the link to the primaries, the shared upstreams, the open streams."""

    def __init__(self, settings: Settings) -> None:
        assert settings.nats is not None, "an edge needs --nats"
        self.settings = settings
        self.link = EdgeLink(settings.nats)
        self.streams = Streams(settings.ping_s, settings.send_timeout_s)
        self.upstreams: dict[str, Upstream] = {}
        self._opening: dict[str, asyncio.Future[Upstream]] = {}
        self._keepalive: asyncio.Task[None] | None = None
        # Streams open per credential, held to --max-streams-per-token as on a single server.
        self.open_streams: collections.Counter[str] = collections.Counter()
        # Feed clients resumed from an open upstream's recent events, with no catch-up asked
        # of a primary (GET /healthz says how many).
        self.resumed_here = 0
        # Credentials a primary refused: refused here from then on (refused_credentials.py).
        self.refused = RefusedCredentials()
        self.link.primaries.on_change.append(self._rehome)
        # The live conversations running here (voicestack/scale/edge_voice.py), and what
        # they still have to save on the primary.
        self.voice = SessionDrain(settings.drain_s)
        # The phone call sockets held here (voicestack/scale/edge_calls.py), to --max-calls.
        self.call_slots = CallSlots(settings.max_calls)
        self._voice_saves: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Link to NATS and keep the streams alive."""
        await self.link.start()
        self._keepalive = asyncio.get_running_loop().create_task(self.streams.run())

    def begin_shutdown(self) -> None:
        """A shutdown signal arrived: end every stream (clients reconnect to another edge), and
        each live conversation after its current sentence."""
        self.streams.close_all()
        self.voice.begin_wind_down()

    def voice_work(self, saving: Coroutine[object, object, None]) -> asyncio.Task[None]:
        """Run a live conversation's save on the primary in the background; shutdown waits
        for it."""
        task = asyncio.get_running_loop().create_task(saving)
        self._voice_saves.add(task)
        task.add_done_callback(self._voice_saves.discard)
        return task

    async def voice_sessions_ended(self) -> None:
        """Wait (at most --drain-s and a second) until every live conversation here ended,
        then (as long again at most) until what they saved reached the primary."""
        await self.voice.ended()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.drain_s + 1
        # Closed conversations hand over their last writes as they close.
        await self.voice.emptied(self.settings.drain_s + 1)
        # A save may start another as it ends (a conversation's last writes, then its logout).
        while self._voice_saves and loop.time() < deadline:
            await asyncio.wait(list(self._voice_saves), timeout=deadline - loop.time())

    async def close(self) -> None:
        """End every stream and leave NATS."""
        for upstream in list(self.upstreams.values()):
            upstream.close()
        if self._keepalive is not None:
            self._keepalive.cancel()
        await self.link.close()

    def take_stream(self, credential: str) -> bool:
        """Count a stream against `credential`'s limit; False (nothing counted) when it
        already holds --max-streams-per-token."""
        limit = self.settings.max_streams_per_token
        if limit and self.open_streams[credential] >= limit:
            return False
        self.open_streams[credential] += 1
        return True

    def give_back_stream(self, credential: str) -> None:
        """A stream of `credential` ended: its place is free again."""
        self.open_streams[credential] -= 1
        if self.open_streams[credential] <= 0:
            del self.open_streams[credential]

    def _rehome(self) -> None:
        """A primary came, or serves again: move each stream that now belongs on it, spread
        over REHOME_SPREAD_S rather than all at once onto a primary that has just started."""
        loop = asyncio.get_running_loop()
        for upstream in list(self.upstreams.values()):
            loop.call_later(random.uniform(0, REHOME_SPREAD_S), upstream.rehome)

    def forget(self, upstream: Upstream) -> None:
        """An upstream ended: the next client of its key opens a new one."""
        for key, known in list(self.upstreams.items()):
            if known is upstream:
                del self.upstreams[key]

    def has_upstream(self, key: str) -> bool:
        """Whether an upstream of `key` is open here, or being opened."""
        known = self.upstreams.get(key)
        return (known is not None and not known.closed) or key in self._opening

    async def upstream(
        self, key: str, make: MakeUpstream
    ) -> tuple[Upstream | None, ResponseEnvelope | None]:
        """The open upstream of `key`, or a new one from `make()`: (upstream, None), or (None,
        the primary's refusal). Clients arriving together wait for one opening."""
        while True:
            known = self.upstreams.get(key)
            if known is not None and not known.closed:
                return known, None
            pending = self._opening.get(key)
            if pending is None:
                break
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
        future: asyncio.Future[Upstream] = asyncio.get_running_loop().create_future()
        self._opening[key] = future
        try:
            upstream, head = await make()
            if head.status == 200 and upstream.closed:
                # Ended before it was answered (the primary stopped, or the stream was over
                # at once): nothing to share.
                head = error_envelope(
                    503, "primary_unavailable", "The stream ended as it opened: try again."
                )
            if head.status != 200:
                future.set_exception(PrimaryUnavailable("refused"))
                future.exception()  # retrieved: waiters retry and get their own answer
                return None, head
            self.upstreams[key] = upstream
            future.set_result(upstream)
            return upstream, None
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()
            raise
        finally:
            self._opening.pop(key, None)
