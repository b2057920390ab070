"""The state of a relayed conversation, and the life of its replies.

TurnState holds what the provider's events change: the user turns, the reply being spoken (at
most one is the session's), the provider responses writing replies, the turn clock, and the
provider's audio format and protocol. It opens a reply (the assistant message and
`reply_started`), ends it with a status, releases it once its audio has played
(`reply_stopped`), cuts it at barge-in, fails the turn, and hangs up.

Barge-in: speech while a reply is the session's sends `clear`, truncates the provider's audio
item to the played milliseconds, and saves the reply `interrupted`, its transcript cut in
proportion to the audio heard (audio.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from voicestack.functions.errors import FunctionError
from voicestack.voice.realtime.metrics import TurnClock
from voicestack.voice.realtime.records import CUT, HUNG_UP, SPOKEN, ReplyEnd
from voicestack.voice.realtime.wire import event
from voicestack.voice.relay.audio import InboundAudio, heard_words
from voicestack.voice.relay.context import RelayContext
from voicestack.voice.relay.events import cancel, truncate
from voicestack.voice.relay.provider import ProviderGone, ProviderLink
from voicestack.voice.relay.reply import RelayReply
from voicestack.voice.relay.session_config import Protocol, provider_audio, session_update
from voicestack.voice.relay.user_turns import UserTurns

log = logging.getLogger(__name__)


class TurnState:
    """The relayed conversation's state: user turns, the reply being spoken, the turn clock."""

    def __init__(self, context: RelayContext) -> None:
        self._context = context
        self._records = context.records
        self._client = context.client
        self._agent = context.agent
        self.provider_audio = provider_audio(context.start)  # what the provider hears, speaks
        self.protocol: Protocol = "ga"  # the provider's, once its session.created told
        self.inbound = InboundAudio(context.start, self.provider_audio)
        self._reply: RelayReply | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._responses: dict[str, RelayReply] = {}
        self._users = UserTurns(context.records, self._send)
        self._speech_start_ms: int | None = None
        self._audio_in_s = 0.0
        self._clock: TurnClock | None = None  # the turn whose speech just ended
        self._expecting = False  # a turn waits for the provider's response
        self._background: set[asyncio.Task[None]] = set()
        self.finished_turns = 0

    @property
    def reply_id(self) -> str | None:
        """The reply the session is speaking, if any."""
        return self._reply.message_id if self._reply else None

    @property
    def waiting(self) -> bool:
        """True while a turn waits on the provider (its silence then fails the turn)."""
        return self._expecting or any(reply.responding for reply in self._responses.values())

    async def history(self) -> list[dict[str, Any]]:
        """The thread so far, as items for a new provider session."""
        items = await self._records.history(self._context.settings.context_messages)
        if self.protocol == "beta":  # the beta protocol's assistant content is "text"
            for item in items:
                for part in item.get("content", []):
                    if part.get("type") == "output_text":
                        part["type"] = "text"
        return items

    def session_update(self) -> dict[str, Any]:
        """The `session.update` for the answering agent, in the provider's protocol."""
        settings = self._context.settings
        return session_update(self._agent, settings, self.provider_audio, self.protocol)

    async def reply_over(self) -> None:
        """Wait until no reply is the session's."""
        await self._idle.wait()

    def _set_reply(self, reply: RelayReply | None) -> None:
        self._reply = reply
        if reply is None:
            self._idle.set()
        else:
            self._idle.clear()

    async def _send(self, kind: str, **fields: Any) -> None:
        await self._client.send_event(event(kind, **fields))

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run `work` in the background until it ends or the conversation hangs up; what its
        records could not keep is logged, and the client told."""
        task = asyncio.create_task(self._guarded(work), name=f"voicestack-relay-{name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except FunctionError as exc:
            await self.records_failed(exc)

    async def records_failed(self, exc: FunctionError) -> None:
        """What the conversation said could not be kept (the records' keeper, an edge's
        primary, is away or refused): logged, and the client told; the conversation goes on,
        and the next turn is kept once the keeper answers again."""
        thread_id = self._context.thread_id
        log.warning("relay of %s could not keep its records: %s", thread_id, exc.message)
        with contextlib.suppress(Exception):
            await self._send("error", code=exc.code, message=exc.message)

    # -- replies -----------------------------------------------------------------------------

    async def _open_reply(self) -> RelayReply:
        clock = self._clock or TurnClock.ended_now()
        self._clock = None
        if clock.transcript is None:
            clock.transcribed(self._audio_in_s)
        context, reply_to = self._context, self._users.take_last()
        claim = await self._records.open_reply(reply_to, self._agent.name, clock.audio_in_seconds)
        reply = RelayReply.of(
            claim,
            clock,
            context.start,
            self.provider_audio,
            self._agent.name,
            self._save_delta,
            context.flush_ms,
        )
        self._set_reply(reply)
        await self._send("reply_started", messageId=reply.message_id)
        return reply

    async def _save_delta(self, reply: RelayReply, text: str) -> None:
        reply.delta_seq += 1
        await self._records.reply_delta(reply.claim, text, reply.delta_seq)

    async def _end(
        self, reply: RelayReply, status: str, error: tuple[str, str] | None = None
    ) -> None:
        if reply.ended:
            return
        reply.ended = True
        await self._records.end_reply(reply.claim, status, reply.wall_ms(), error)

    async def _play_out(self, reply: RelayReply) -> None:
        """Once the reply's audio has played, it stops being the session's."""
        done_at = reply.audio.played_out_at()
        if done_at is not None:
            await asyncio.sleep(max(0.0, done_at - self._loop_time()))
        if self._reply is reply:
            await self._release(reply)

    async def _release(self, reply: RelayReply) -> None:
        """A reply spoken to its end: save its metrics, tell the client."""
        if self._reply is reply:
            self._set_reply(None)
        message_id = reply.message_id
        await self._records.reply_ended(message_id, ReplyEnd(SPOKEN, "complete"), reply.clock)
        await self._send("reply_stopped", messageId=message_id, status="complete")

    async def interrupt(self, link: ProviderLink | None, why: str) -> None:
        """Barge-in (or shutdown, `why`): `clear` the client, truncate the provider's audio to
        what was played, and save the reply cut to the words heard."""
        reply = self._reply
        if reply is None:
            return
        self._set_reply(None)
        reply.cut = True
        if reply.tools is not None and not reply.tools.done():
            reply.tools.cancel()  # its calls were for the reply nobody listens to any more
        await self._send("clear")
        played = reply.audio.played_ms(self._loop_time())
        if link is not None:
            with contextlib.suppress(ProviderGone):
                if reply.audio.item_id is not None and reply.audio.item_ms > 0:
                    item_played = reply.audio.item_played_ms(played)
                    await link.send(truncate(reply.audio.item_id, item_played))
                if reply.responding:
                    await link.send(cancel(reply.response_id))
        with contextlib.suppress(Exception):
            await reply.text.close()
        heard = heard_words(reply.transcript, played, reply.audio.provider_ms)
        message_id, cut = reply.message_id, ReplyEnd(CUT, heard=heard, why=why)
        await self._records.reply_ended(message_id, cut, reply.clock)
        reply.cut_saved = True
        if not reply.responding:  # its response ended while the cut was being made
            await self._end(reply, "interrupted")
        await self._send("reply_stopped", messageId=message_id, status="interrupted")

    # -- endings -------------------------------------------------------------------------------

    async def fail_turn(self, code: str, message: str, link_lost: bool = False) -> None:
        """End the current turn `failed` with the reason, and tell the client."""
        expecting, self._expecting = self._expecting, False
        if link_lost:
            self._responses.clear()
            await self._users.end_all()
        reply = self._reply
        if reply is None and expecting:
            try:
                reply = await self._open_reply()
            except FunctionError as exc:  # no reply can be kept to fail: the client is told
                thread_id = self._context.thread_id
                log.warning("relay of %s could not keep a failed turn: %s", thread_id, exc)
        if reply is not None and not reply.ended:
            self._set_reply(None)
            with contextlib.suppress(Exception):
                await reply.text.close()
            await self._end(reply, "failed", (code, message))
            message_id = reply.message_id
            await self._records.reply_ended(message_id, ReplyEnd(SPOKEN, "failed"), reply.clock)
            await self._send("reply_stopped", messageId=message_id, status="failed")
        await self._send("error", code=code, message=message)

    async def hang_up(self) -> None:
        """The conversation ended: stop background work, keep every text, save the metrics."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._users.end_all()
        reply = self._reply
        self._set_reply(None)
        if reply is None or reply.cut:
            return
        with contextlib.suppress(Exception):
            await reply.text.close()
        status = "complete" if reply.ended else None
        await self._records.reply_ended(reply.message_id, ReplyEnd(HUNG_UP, status), reply.clock)
