"""What the provider's events mean for the client and the thread.

- The provider's turn-taking becomes `user_speech_started`/`_stopped`; a user turn it commits
  becomes a user message, its transcript streamed in as deltas, and `transcript` when complete.
- A response becomes the assistant message (`reply_started`), its transcript saved in coalesced
  deltas, its audio forwarded to the client (`reply_audio`, then binary frames), its usage on
  the message; it ends `complete` at `response.done`, and `reply_stopped` follows once its audio
  has played. Function calls run as tool-call rows (tools.py); their outputs go back, then
  `response.create`, and the next response writes the same message.
- Barge-in: speech while a reply is the session's sends `clear`, truncates the provider's audio
  item to the played milliseconds, and saves the reply `interrupted`, its transcript cut in
  proportion to the audio heard (audio.py).

Turn metrics (DESIGN §9 `voice`): the clock starts when the provider reports the end of speech;
"transcript" is the moment the provider took the turn (`response.created`), since its transcript
of the user may come after its answer; the first token is the first transcript or audio delta,
and the first audio is the first frame sent to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from voicestack.agent.handoff import AgentTools
from voicestack.agent.reply_state import HEARD_CUT
from voicestack.agent.reply_tools import ReplyStopped
from voicestack.store.db import WriteDB
from voicestack.voice.realtime.metrics import TurnClock, save_cut, save_hung_up, save_spoken
from voicestack.voice.realtime.wire import event
from voicestack.voice.relay import transcripts
from voicestack.voice.relay.audio import InboundAudio, heard_words
from voicestack.voice.relay.context import RelayContext, TurnFailed
from voicestack.voice.relay.events import (
    HARMLESS_ERRORS,
    audio_of,
    cancel,
    error_of,
    function_output,
    is_aftermath,
    response_status,
    text_of,
    truncate,
    usage_of,
    user_text,
)
from voicestack.voice.relay.provider import ProviderGone, ProviderLink
from voicestack.voice.relay.reply import RelayReply
from voicestack.voice.relay.session_config import session_update
from voicestack.voice.relay.tools import Approvals, call_request, run_function_calls
from voicestack.voice.relay.user_turns import UserTurns

log = logging.getLogger(__name__)


class Conversation:
    """The relayed conversation's state: user turns, the reply being spoken, the turn clock."""

    def __init__(self, context: RelayContext) -> None:
        self._context = context
        self._store = context.store
        self._client = context.client
        self._agent = context.agent
        self._author = context.user.id if context.user else None
        self.inbound = InboundAudio(context.start)
        self.approvals = Approvals(context.store)
        self._reply: RelayReply | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._responses: dict[str, RelayReply] = {}
        self._users = UserTurns(context.thread_id, self._author, self._write, self._send)
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

    def offer(self) -> AgentTools:
        """What the answering agent offers the model."""
        return self._context.tools.offer(self._agent)

    async def history(self) -> list[dict[str, Any]]:
        """The thread so far, as items for a new provider session."""
        thread_id, limit = self._context.thread_id, self._context.settings.context_messages
        items: list[dict[str, Any]] = await self._store.read(
            lambda snap: transcripts.history_items(snap.db(), thread_id, limit)
        )
        return items

    async def reply_over(self) -> None:
        """Wait until no reply is the session's."""
        await self._idle.wait()

    def _set_reply(self, reply: RelayReply | None) -> None:
        self._reply = reply
        if reply is None:
            self._idle.set()
        else:
            self._idle.clear()

    async def _write(self, fn: Callable[[WriteDB], Any]) -> Any:
        return (await self._store.write(fn)).value

    async def _send(self, kind: str, **fields: Any) -> None:
        await self._client.send_event(event(kind, **fields))

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    # -- the client ----------------------------------------------------------------------------

    def played(self, message_id: str, ms: int) -> None:
        """The client played `ms` of the reply `message_id`."""
        reply = self._reply
        if reply is not None and reply.message_id == message_id:
            reply.audio.report(ms)

    async def typed(self, text: str, link: ProviderLink) -> None:
        """A typed turn: it interrupts the reply, is saved, and the provider answers it."""
        await self.interrupt(link, HEARD_CUT)
        await self._users.typed(text)
        self._audio_in_s = 0.0
        self._clock = TurnClock.ended_now()
        self._expecting = True  # set first: the answer may come while the sends run
        with contextlib.suppress(ProviderGone):
            await link.send(user_text(text))
            await link.send({"type": "response.create"})

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
                    await link.send(cancel())
        with contextlib.suppress(Exception):
            await reply.text.close()
        heard = heard_words(reply.transcript, played, reply.audio.provider_ms)
        message_id, clock = reply.message_id, reply.clock
        await self._write(lambda db: save_cut(db, message_id, clock, heard, why))
        reply.cut_saved = True
        if not reply.responding:  # its response ended while the cut was being made
            await self._end(reply, "interrupted")
        await self._send("reply_stopped", messageId=message_id, status="interrupted")

    # -- provider events -----------------------------------------------------------------------

    async def on_event(self, received: dict[str, Any], link: ProviderLink) -> None:
        """Handle one provider event (GA name); raises TurnFailed when it fails the turn."""
        kind = received["type"]
        if kind == "input_audio_buffer.speech_started":
            await self._speech_started(received, link)
        elif kind == "input_audio_buffer.speech_stopped":
            await self._speech_stopped(received)
        elif kind == "input_audio_buffer.committed":
            await self._users.committed(text_of(received, "item_id"), self._audio_in_s)
        elif kind == "conversation.item.input_audio_transcription.delta":
            item_id, text = text_of(received, "item_id"), text_of(received)
            await self._users.delta(item_id, text, self._audio_in_s)
        elif kind == "conversation.item.input_audio_transcription.completed":
            item_id, text = text_of(received, "item_id"), text_of(received, "transcript")
            await self._users.completed(item_id, text, self._audio_in_s)
        elif kind == "conversation.item.input_audio_transcription.failed":
            item_id, reason = text_of(received, "item_id"), error_of(received)[1]
            await self._users.failed(item_id, reason, self._audio_in_s)
        elif kind == "response.created":
            await self._response_created(received)
        elif kind == "response.output_item.added":
            self._item_added(received)
        elif kind == "response.output_audio.delta":
            await self._audio(received, audio_of(received))
        elif kind == "response.output_audio.done":
            await self._audio(received, b"", last=True)
        elif kind in ("response.output_audio_transcript.delta", "response.output_text.delta"):
            await self._transcript(received, text_of(received))
        elif kind in ("response.function_call_arguments.done", "response.output_item.done"):
            self._function_call(received)
        elif kind == "response.done":
            await self._response_done(received, link)
        elif kind == "error":
            await self._error(received)

    async def _speech_started(self, received: dict[str, Any], link: ProviderLink) -> None:
        start = received.get("audio_start_ms")
        self._speech_start_ms = start if type(start) is int else None
        await self._send("user_speech_started")
        await self.interrupt(link, HEARD_CUT)

    async def _speech_stopped(self, received: dict[str, Any]) -> None:
        end, start = received.get("audio_end_ms"), self._speech_start_ms
        self._audio_in_s = (end - start) / 1000 if type(end) is int and start is not None else 0.0
        self._clock = TurnClock.ended_now()
        self._expecting = True
        await self._send("user_speech_stopped")

    def _of(self, received: dict[str, Any]) -> RelayReply | None:
        """The reply a response event belongs to, if it is still being spoken."""
        response_id = received.get("response_id")
        reply = self._responses.get(response_id) if isinstance(response_id, str) else self._reply
        return reply if reply is not None and not reply.cut else None

    async def _response_created(self, received: dict[str, Any]) -> None:
        response = received.get("response")
        response_id = response.get("id") if isinstance(response, dict) else None
        if not isinstance(response_id, str):
            return
        self._expecting = False
        reply = self._reply
        if reply is None or reply.ended:
            if reply is not None:  # a reply still playing out: the new one replaces it
                await self._release(reply)
            reply = await self._open_reply()
        reply.response_id, reply.responding = response_id, True
        reply.step += 1
        self._responses[response_id] = reply
        message_id = reply.message_id
        await self._write(lambda db: transcripts.begin_response(db, message_id))

    async def _open_reply(self) -> RelayReply:
        clock = self._clock or TurnClock.ended_now()
        self._clock = None
        if clock.transcript is None:
            clock.transcribed(self._audio_in_s)
        context, agent, reply_to = self._context, self._agent, self._users.take_last()
        claim = await self._write(
            lambda db: transcripts.open_reply(
                db,
                context.thread_id,
                self._author,
                reply_to,
                agent,
                context.settings.model,
                clock.audio_in_seconds,
            )
        )
        calls = context.tools.for_reply(claim, self.approvals.wait)
        reply = RelayReply.of(
            claim, clock, context.start, calls, self._save_delta, context.flush_ms
        )
        self._set_reply(reply)
        await self._send("reply_started", messageId=reply.message_id)
        return reply

    async def _save_delta(self, reply: RelayReply, text: str) -> None:
        reply.delta_seq += 1
        claim, seq = reply.claim, reply.delta_seq
        await self._write(lambda db: transcripts.add_reply_delta(db, claim, text, seq))

    def _item_added(self, received: dict[str, Any]) -> None:
        reply, item = self._of(received), received.get("item")
        if (
            reply is not None
            and isinstance(item, dict)
            and item.get("type") == "message"
            and isinstance(item.get("id"), str)
        ):
            reply.audio.begin_item(item["id"])

    async def _audio(self, received: dict[str, Any], pcm: bytes, last: bool = False) -> None:
        reply = self._of(received)
        if reply is None or reply is not self._reply:
            return
        if isinstance(received.get("item_id"), str):
            reply.audio.begin_item(received["item_id"])
        await reply.forward(self._client, reply.audio.convert(pcm, last=last))

    async def _transcript(self, received: dict[str, Any], text: str) -> None:
        reply = self._of(received)
        if reply is not None and text:
            await reply.said(text)

    def _function_call(self, received: dict[str, Any]) -> None:
        reply = self._of(received)
        item = received.get("item")
        if received["type"] == "response.output_item.done" and (
            not isinstance(item, dict) or item.get("type") != "function_call"
        ):
            return
        request = call_request(received)
        if reply is not None and request is not None:
            reply.add_call(request)

    async def _response_done(self, received: dict[str, Any], link: ProviderLink) -> None:
        response = received.get("response")
        response_id = response.get("id") if isinstance(response, dict) else None
        reply = self._responses.pop(response_id, None) if isinstance(response_id, str) else None
        if reply is None:
            return
        reply.responding = False
        usage, message_id = usage_of(received), reply.message_id
        await self._write(lambda db: transcripts.add_response_usage(db, message_id, usage))
        status = response_status(received)
        if reply.cut and not reply.cut_saved:
            return  # the interrupt under way saves the cut, then ends the reply
        if reply.cut or reply.ended:
            await self._end(reply, "interrupted")
            return
        if status == "failed":
            code, message = error_of(received)
            raise TurnFailed("realtime_error", f"{message} ({code})")
        if status == "cancelled":  # the provider stopped it on its own: as a barge-in
            if self._reply is reply:
                await self.interrupt(link, HEARD_CUT)
            await self._end(reply, "interrupted")
            return
        if reply.requests:
            task = asyncio.create_task(self._run_calls(reply, link), name="voicestack-relay-tools")
            reply.tools = task
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        with contextlib.suppress(Exception):
            await reply.text.close()
        await self._end(reply, "complete")
        self.finished_turns += 1
        task = asyncio.create_task(self._play_out(reply), name="voicestack-relay-playout")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _end(
        self, reply: RelayReply, status: str, error: tuple[str, str] | None = None
    ) -> None:
        if reply.ended:
            return
        reply.ended = True
        claim, wall_ms, pricing = reply.claim, reply.wall_ms(), self._context.pricing
        await self._write(
            lambda db: transcripts.end_reply(db, claim, status, wall_ms, error, pricing)
        )

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
        message_id, clock = reply.message_id, reply.clock
        await self._write(lambda db: save_spoken(db, message_id, clock, "complete"))
        await self._send("reply_stopped", messageId=message_id, status="complete")

    async def _run_calls(self, reply: RelayReply, link: ProviderLink) -> None:
        requests, reply.requests = reply.requests, []
        try:
            results = await run_function_calls(reply.calls, reply.step, requests)
        except ReplyStopped:
            return
        except Exception:
            log.exception("function calls of relayed reply %s failed", reply.message_id)
            await self.fail_turn("internal_error", "The function calls failed; see the log.")
            return
        with contextlib.suppress(ProviderGone):
            if results.agent is not self._agent:  # handed off: the new agent answers
                self._agent = results.agent
                await link.send(session_update(self.offer(), self._context.settings))
            for call_id, output in results.outputs:
                await link.send(function_output(call_id, output))
            if self._reply is reply:
                self._expecting = True  # set first: the answer may come while the send runs
                await link.send({"type": "response.create"})

    async def _error(self, received: dict[str, Any]) -> None:
        code, message = error_of(received)
        if code in HARMLESS_ERRORS or is_aftermath(received):
            log.info("realtime provider, after a barge-in: %s (%s)", message, code)
            return
        log.warning(
            "realtime provider error on %s: %s (%s)", self._context.thread_id, message, code
        )
        if self.waiting or (self._reply is not None and not self._reply.ended):
            raise TurnFailed("realtime_error", f"{message} ({code})")
        await self._send("error", code="realtime_error", message=f"{message} ({code})")

    # -- endings -------------------------------------------------------------------------------

    async def fail_turn(self, code: str, message: str, link_lost: bool = False) -> None:
        """End the current turn `failed` with the reason, and tell the client."""
        expecting, self._expecting = self._expecting, False
        if link_lost:
            self._responses.clear()
            await self._users.end_all()
        reply = self._reply
        if reply is None and expecting:
            reply = await self._open_reply()
        if reply is not None and not reply.ended:
            self._set_reply(None)
            with contextlib.suppress(Exception):
                await reply.text.close()
            await self._end(reply, "failed", (code, message))
            message_id, clock = reply.message_id, reply.clock
            await self._write(lambda db: save_spoken(db, message_id, clock, "failed"))
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
        reply, self._reply = self._reply, None
        if reply is None or reply.cut:
            return
        with contextlib.suppress(Exception):
            await reply.text.close()
        message_id, clock = reply.message_id, reply.clock
        status = "complete" if reply.ended else None
        await self._write(lambda db: save_hung_up(db, message_id, clock, status))
