"""A live conversation relayed to a speech-to-speech model (DESIGN §10, `--voice-mode realtime`).

RelaySession has the surface of the pipeline's VoiceSession (`begin`, `audio`, `control`,
`wind_down`, `close`), so the audio socket and the Twilio socket take either. Instead of
transcribing and answering itself, it holds one WebSocket to an OpenAI Realtime-compatible
provider (provider.py): the client's audio goes there, the provider's turn-taking (server VAD),
audio and transcripts come back, and the provider events are turned into the client events of
DESIGN §9 and into thread messages (conversation.py does that part). The provider's first
event, `session.created`, says which protocol it speaks (GA or beta), and the `session.update`
that configures it takes that shape.

Failures end the turn, never the server: a provider `error`, a failed response, a provider that
stays silent for `--realtime-timeout-s` while a turn waits on it, or a dropped socket make the
reply `failed` with the reason and send the client `error`. After a drop or a silence the relay
connects again for the next turn (a new provider session, which does not remember the earlier
turns); when it cannot connect at all, or connections keep dropping without a finished turn
(MAX_DROPS), the client's socket is closed with 1013 `realtime_unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from voicestack.agent.reply_state import SHUTDOWN_CUT
from voicestack.functions.errors import FunctionError
from voicestack.reactive.streams import Stream
from voicestack.voice.realtime.client import close_at_feed_end
from voicestack.voice.realtime.feed_events import feed_events
from voicestack.voice.realtime.wire import (
    CLOSE_GOING_AWAY,
    CLOSE_TRY_AGAIN_LATER,
    Control,
    Played,
    Stop,
    TypedText,
    event,
)
from voicestack.voice.relay.context import RelayContext, TurnFailed
from voicestack.voice.relay.conversation import Conversation
from voicestack.voice.relay.provider import ProviderGone, ProviderLink, ProviderUnavailable
from voicestack.voice.relay.session_config import protocol_of

log = logging.getLogger(__name__)

# Client audio kept while the provider connects (a caller's first words come right away).
MAX_PENDING_MS = 5000
# How long a new provider session may take to announce itself (session.created, which says
# the protocol it speaks); a provider that says nothing is taken to speak GA.
GREETING_WAIT_S = 3.0
# Connections that may drop in a row, none finishing a turn, before the session gives up.
MAX_DROPS = 3
# After a drop, attempts to reach the provider again before the session gives up.
RECONNECT_RETRIES = 2
CLOSE_INTERNAL_ERROR = 1011  # the relay itself failed


class ProviderSilent(Exception):
    """The provider sent nothing for the timeout while a turn waited on it."""


class RelaySession:
    """A live conversation between one client and one thread, spoken by a realtime model."""

    def __init__(self, context: RelayContext, feed: Stream) -> None:
        """`context` says who talks on which thread, through which client, with which agent."""
        self.thread_id = context.thread_id
        self._context = context
        self._client = context.client
        self._feed = feed
        self._talk = Conversation(context)
        self._link: ProviderLink | None = None
        self._connected = asyncio.Event()  # set while `_link` is ready for turns
        self._pending: list[bytes] = []  # client audio (24 kHz PCM) while not connected
        self._pending_bytes = 0
        self._winding_down = False
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def reply_id(self) -> str | None:
        """The id of the reply the session is speaking, if any."""
        return self._talk.reply_id

    async def begin(self) -> None:
        """Connect to the provider and follow the thread; `ready` goes out once connected."""
        for name, work in (("relay", self._relay()), ("feed", self._follow_feed())):
            self._tasks.append(asyncio.create_task(work, name=f"voicestack-relay-{name}"))

    async def audio(self, frame: bytes) -> None:
        """One binary frame of the client's audio, forwarded (kept while the provider
        connects, up to MAX_PENDING_MS, the oldest dropped first)."""
        pcm = self._talk.inbound(frame)
        link = self._link
        if self._winding_down or not pcm:
            return
        if link is None:
            self._pending.append(pcm)
            self._pending_bytes += len(pcm)
            while self._pending_bytes > MAX_PENDING_MS * self._talk.provider_audio.bytes_per_ms:
                self._pending_bytes -= len(self._pending.pop(0))
            return
        with contextlib.suppress(ProviderGone):  # the relay task notices and reconnects
            await link.send_audio(pcm)

    async def control(self, message: Control) -> bool:
        """A control message; False when the client asked to end the session."""
        if isinstance(message, Played):
            self._talk.played(message.message_id, message.ms)
        elif isinstance(message, TypedText):
            if self._winding_down:
                return True
            if self._link is None:  # reconnecting: the turn waits for it, within the timeout
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._connected.wait(), self._context.settings.timeout_s)
            if self._link is None:
                await self._client.send_event(
                    event(
                        "error",
                        code="realtime_unavailable",
                        message="The realtime provider is reconnecting; try again shortly.",
                    )
                )
                return True
            try:
                await self._talk.typed(message.text, self._link)
            except FunctionError as exc:
                await self._talk.records_failed(exc)
        elif isinstance(message, Stop):
            return False
        return True

    async def wind_down(self, timeout: float) -> None:
        """Server shutdown: take no new turn, let the reply play out (within `timeout`
        seconds), save it cut to what was heard, and close with 1001."""
        if self._closing:  # closing already: its hang-up keeps what was said
            return
        self._winding_down = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._talk.reply_over(), timeout)
        await self._talk.interrupt(self._link, SHUTDOWN_CUT)
        await self._client.close(CLOSE_GOING_AWAY, "server_shutting_down")

    async def close(self) -> None:
        """End the session: the provider's socket closes, a reply still being written is
        stopped keeping its text, and its metrics are saved."""
        self._closing = True
        try:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            link, self._link = self._link, None
            if link is not None:
                await link.close()
            self._feed.close()
            try:
                await self._talk.hang_up()
            except FunctionError as exc:
                log.warning("relay of %s ended without its last records: %s", self.thread_id, exc)
        finally:
            # Forgotten last, so that a shutdown waits for the records handed over above.
            if self._context.forget is not None:
                self._context.forget(self)

    # -- the provider --------------------------------------------------------------------------

    async def _relay(self) -> None:
        """Connect, configure, and relay events; after a drop or a silence, connect again."""
        settings = self._context.settings
        drops = 0
        announced = False
        while not self._closing:
            if settings.url is None:
                await self._give_up(
                    "No realtime provider is configured: set --realtime-url or --openai-base-url."
                )
                return
            link = await self._connect(settings.url, retries=RECONNECT_RETRIES if announced else 0)
            if link is None:
                return
            finished = self._talk.finished_turns
            try:
                first = await self._greeting(link)
                self._talk.protocol = protocol_of(first)
                await link.send(self._talk.session_update())
                for item in await self._talk.history():
                    await link.send(item)
                while self._pending:  # what the client said meanwhile, in order
                    pcm = self._pending.pop(0)
                    self._pending_bytes -= len(pcm)
                    await link.send_audio(pcm)
                self._link = link
                self._connected.set()
                if not announced:
                    announced = True
                    rate = self._context.start.sample_rate
                    await self._client.send_event(event("ready", sampleRate=rate))
                await self._pump(link, first)
            except ProviderGone as exc:
                code = "realtime_disconnected"
                message = f"The realtime provider went away: {exc.reason}."
            except ProviderSilent:
                code = "realtime_timeout"
                message = (
                    f"The realtime provider sent nothing for {settings.timeout_s:g} s"
                    " (--realtime-timeout-s) during the turn."
                )
            except Exception:
                log.exception("relay of %s failed", self.thread_id)
                await self._break_down()
                return
            finally:
                self._link = None
                self._connected.clear()
                await link.close()
            if self._closing:
                return
            log.warning("relay of %s: %s", self.thread_id, message)
            await self._talk.fail_turn(code, message, link_lost=True)
            drops = 0 if self._talk.finished_turns > finished else drops + 1
            if drops >= MAX_DROPS:
                await self._give_up("The realtime provider keeps dropping the connection.")
                return

    async def _connect(self, url: str, retries: int) -> ProviderLink | None:
        """A new provider session, trying `retries` more times (a second apart, then two, ...)
        when the provider cannot be reached; None, with the client told, when it cannot."""
        settings = self._context.settings
        for attempt in range(retries + 1):
            try:
                key = await self._context.provider_key()
                return await ProviderLink.open(url, key, settings.timeout_s)
            except ProviderUnavailable as exc:
                log.warning("realtime provider unavailable for %s: %s", self.thread_id, exc.reason)
                reason = exc.reason
            if attempt < retries:
                await asyncio.sleep(2**attempt)
        await self._give_up(f"The realtime provider is unavailable: {reason}.")
        return None

    async def _greeting(self, link: ProviderLink) -> dict[str, Any] | None:
        """The provider's first event (None when it sends none within GREETING_WAIT_S)."""
        try:
            async with asyncio.timeout(min(GREETING_WAIT_S, self._context.settings.timeout_s)):
                return await link.receive()
        except TimeoutError:
            return None

    async def _pump(self, link: ProviderLink, first: dict[str, Any] | None) -> None:
        """Handle the provider's events (from `first`, already read) until its socket closes or
        it falls silent mid-turn."""
        timeout = self._context.settings.timeout_s
        while True:
            if first is not None:
                received, first = first, None
            elif self._talk.waiting:
                try:
                    async with asyncio.timeout(timeout):
                        received = await link.receive()
                except TimeoutError:
                    raise ProviderSilent from None
            else:
                received = await link.receive()
            try:
                await self._talk.on_event(received, link)
            except TurnFailed as exc:
                await self._talk.fail_turn(exc.code, exc.message)
            except (ProviderGone, asyncio.CancelledError):
                raise
            except FunctionError as exc:  # the records' keeper (an edge's primary) is away
                await self._talk.records_failed(exc)
            except Exception:
                log.exception("relay of %s could not handle %s", self.thread_id, received["type"])
                message = (
                    "The relay could not handle the provider's answer; the server log says why."
                )
                await self._talk.fail_turn("internal_error", message)

    async def _break_down(self) -> None:
        """The relay itself failed: the turn fails, and the client is told and let go."""
        message = "The relay failed; the server log says why."
        try:
            await self._talk.fail_turn("internal_error", message, link_lost=True)
        except Exception:
            log.exception("relay of %s could not fail its turn", self.thread_id)
            with contextlib.suppress(Exception):
                await self._client.send_event(
                    event("error", code="internal_error", message=message)
                )
        with contextlib.suppress(Exception):
            await self._client.close(CLOSE_INTERNAL_ERROR, "internal_error")

    async def _give_up(self, message: str) -> None:
        await self._client.send_event(event("error", code="realtime_unavailable", message=message))
        await self._client.close(CLOSE_TRY_AGAIN_LATER, "realtime_unavailable")

    # -- the thread feed -----------------------------------------------------------------------

    async def _follow_feed(self) -> None:
        seen = self._context.tool_call_seen
        async for item in feed_events(self._feed):
            if item.kind == "tool_call" and seen is not None:
                seen(item.data)
        if self._winding_down or self._closing:
            return
        # The feed ends when the caller may no longer see the thread, or at shutdown.
        await close_at_feed_end(self._client, self._feed.outbox.ended_by)
