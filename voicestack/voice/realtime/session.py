"""One live conversation on a thread: audio in, turns out, replies spoken back, barge-in.

The session is fed by its socket (`audio`, `control`) and talks back through a VoiceClient. Its
three tasks each do one thing: the turn task transcribes and saves turns one at a time, the feed
task follows the thread's feed for the current reply's `speech` and final `message` events, and
the speaker task sends each spoken sentence as paced audio frames after a `reply_audio` event.

A reply is the session's from the moment its turn is saved until `reply_stopped`, which comes
once its audio has played (not when its last frame is sent, 0.3 s earlier): while it is,
speech longer than `min_interruption_ms` interrupts it (barge-in), and shorter sounds are
dropped. Audio is paced to real time with a small lead, so `clear` has little to throw away.
Each turn carries a TurnClock (metrics.py), saved as the reply's `voice` when the reply ends.

At server shutdown (`wind_down`) the session takes no new turn, lets the sentence being spoken
play out, saves the reply cut to what was heard, and closes with 1001. When the feed ends for
another reason, the caller lost the thread (4404) or their token (4401).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from voicestack.agent.llm import ProviderError
from voicestack.agent.reply_state import HEARD_CUT, SHUTDOWN_CUT
from voicestack.config import Settings
from voicestack.functions.errors import FunctionError
from voicestack.reactive.streams import Stream
from voicestack.voice.realtime import codec
from voicestack.voice.realtime.client import VoiceClient, close_at_feed_end
from voicestack.voice.realtime.feed_events import FeedEvent, feed_events
from voicestack.voice.realtime.heard import SpokenReply
from voicestack.voice.realtime.metrics import TurnClock
from voicestack.voice.realtime.records import CUT, HUNG_UP, SPOKEN, ReplyEnd, SavedTurn, TurnRecords
from voicestack.voice.realtime.turns import (
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnSettings,
)
from voicestack.voice.realtime.wire import (
    CLOSE_GOING_AWAY,
    Control,
    Played,
    Start,
    Stop,
    TypedText,
    event,
)

log = logging.getLogger(__name__)

FRAME_MS = 20
# How far ahead of real time reply audio is sent: enough to ride out a slow sentence.
LEAD_MS = 300
_FINAL = frozenset({"complete", "failed", "interrupted"})


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Turn-taking settings of every session (from the server's flags)."""

    turns: TurnSettings
    min_interruption_ms: int

    @classmethod
    def of(cls, settings: Settings) -> SessionSettings:
        """The server's flags (`--vad-*`, `--min-interruption-ms`) for its sessions."""
        turns = TurnSettings(
            settings.vad_threshold,
            settings.vad_silence_ms,
            settings.vad_min_speech_ms,
            settings.vad_energy_floor_dbfs,
        )
        return cls(turns, settings.min_interruption_ms)


@dataclass(slots=True)
class _Reply:
    spoken: SpokenReply
    clock: TurnClock
    final_status: str | None = None  # from the feed: the reply's text has ended
    sentences: asyncio.Queue[dict[str, object] | None] = field(default_factory=asyncio.Queue)
    audio_clock: float | None = None  # loop time its first audio frame was due
    mid_sentence: bool = False  # a sentence's frames are being sent

    def played_by(self, now: float) -> float:
        """Milliseconds of audio a client playing it as it arrives has played by `now`."""
        return 0.0 if self.audio_clock is None else (now - self.audio_clock) * 1000


class VoiceSession:
    """A live conversation between one client and one thread."""

    def __init__(
        self,
        *,
        thread_id: str,
        records: TurnRecords,
        feed: Stream,
        settings: SessionSettings,
        start: Start,
        client: VoiceClient,
        forget: Callable[[VoiceSession], None] | None = None,
    ) -> None:
        """`forget` is called with the session when it closes."""
        self.thread_id = thread_id
        self._records = records
        self._feed = feed
        self._settings = settings
        self._start = start
        self._client = client
        self._forget = forget
        self._inbound = codec.InboundAudio(start)
        self._turns = TurnDetector(settings.turns)
        self._queue: asyncio.Queue[tuple[bytes | str, TurnClock]] = asyncio.Queue()
        self._reply: _Reply | None = None
        self._replies: asyncio.Queue[_Reply] = asyncio.Queue()
        self._turn_over_reply = False  # the current turn began while a reply was the session's
        self._barged_in = False
        self._played_reports = False  # the client has sent `played`: trust it, not the clock
        self._winding_down = False
        self._ended = asyncio.Event()  # wind-down done: the reply was saved, the socket closed
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def reply_id(self) -> str | None:
        """The id of the reply the session is speaking, if any."""
        return self._reply.spoken.message_id if self._reply else None

    async def begin(self) -> None:
        """Start the session's tasks and tell the client it may speak."""
        for name, work in (
            ("turns", self._take_turns()),
            ("feed", self._follow_feed()),
            ("speaker", self._speak()),
        ):
            self._tasks.append(asyncio.create_task(work, name=f"voicestack-voice-{name}"))
        await self._client.send_event(event("ready", sampleRate=self._start.sample_rate))

    async def audio(self, frame: bytes) -> None:
        """One binary frame of the client's audio."""
        if self._winding_down:
            return
        for found in self._turns.feed(self._inbound(frame)):
            if isinstance(found, SpeechStarted):
                self._turn_over_reply = self._reply is not None
                self._barged_in = False
                await self._client.send_event(event("user_speech_started"))
            elif isinstance(found, SpeechStopped):
                await self._client.send_event(event("user_speech_stopped"))
                if self._turn_over_reply and not self._barged_in:
                    continue  # a cough or an "mm-hm" over the reply: not a turn
                self._queue.put_nowait((found.pcm, TurnClock.ended_now()))
        if (
            self._turns.in_turn
            and self._turn_over_reply
            and not self._barged_in
            and self._turns.voiced_ms >= self._settings.min_interruption_ms
        ):
            self._barged_in = True
            await self.interrupt()

    async def control(self, message: Control) -> bool:
        """A control message; False when the client asked to end the session."""
        if isinstance(message, Played):
            self._played_reports = True
            if self._reply is not None and self._reply.spoken.message_id == message.message_id:
                self._reply.spoken.played_ms = max(self._reply.spoken.played_ms, message.ms)
        elif isinstance(message, TypedText):
            if self._winding_down:
                return True
            await self.interrupt()
            self._queue.put_nowait((message.text, TurnClock.ended_now()))
        elif isinstance(message, Stop):
            return False
        return True

    async def interrupt(self, why: str = HEARD_CUT) -> None:
        """Barge-in (or the end of a shutdown's wait, `why` SHUTDOWN_CUT): stop the reply,
        `clear` the client, save the text that was heard."""
        reply = self._reply
        if reply is None:
            return
        self._reply = None
        reply.sentences.put_nowait(None)
        await self._client.send_event(event("clear"))
        await self._save_heard(reply, why)

    async def _save_heard(self, reply: _Reply, why: str) -> None:
        if not self._played_reports:
            reply.spoken.assume_played(reply.played_by(asyncio.get_running_loop().time()))
        heard = reply.spoken.heard_words()
        message_id = reply.spoken.message_id
        await self._records.reply_ended(
            message_id, ReplyEnd(CUT, heard=heard, why=why), reply.clock
        )
        await self._client.send_event(
            event("reply_stopped", messageId=message_id, status="interrupted")
        )

    async def wind_down(self, timeout: float) -> None:
        """Server shutdown: take no new turn, let the sentence being spoken play out (within
        `timeout` seconds), save the reply cut to what was heard, and close with 1001."""
        self._winding_down = True
        self._tasks[0].cancel()  # the turn task: a turn not yet answered is not answered now
        reply = self._reply
        if reply is not None and not reply.mid_sentence:
            reply.sentences.put_nowait(None)  # between sentences: end now
        if reply is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), timeout)
            if not self._ended.is_set():
                await self.interrupt(SHUTDOWN_CUT)
        await self._client.close(CLOSE_GOING_AWAY, "server_shutting_down")

    async def close(self) -> None:
        """End the session; a reply still being written is stopped, keeping its text."""
        if self._forget is not None:
            self._forget(self)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._feed.close()
        reply, self._reply = self._reply, None
        if reply is not None:
            message_id, status = reply.spoken.message_id, reply.final_status
            await self._records.reply_ended(message_id, ReplyEnd(HUNG_UP, status), reply.clock)

    # -- turns ---------------------------------------------------------------------------------

    async def _take_turns(self) -> None:
        while True:
            turn, clock = await self._queue.get()
            try:
                if isinstance(turn, str):
                    await self._typed_turn(turn, clock)
                else:
                    await self._spoken_turn(turn, clock)
            except ProviderError as exc:
                await self._client.send_event(
                    event("error", code="transcription_failed", message=exc.message)
                )
            except FunctionError as exc:  # e.g. the caller lost the thread meanwhile
                await self._client.send_event(event("error", code=exc.code, message=exc.message))
            except Exception:
                log.exception("a turn of the live conversation on %s failed", self.thread_id)
                message = "The turn could not be saved; the server log says why."
                await self._client.send_event(
                    event("error", code="internal_error", message=message)
                )

    async def _spoken_turn(self, pcm: bytes, clock: TurnClock) -> None:
        saved = await self._records.spoken_turn(pcm, clock)
        if saved is None:
            message = "No words were heard in that turn; nothing was saved."
            await self._client.send_event(event("error", code="no_speech", message=message))
            return
        await self._answer(saved, clock)

    async def _typed_turn(self, text: str, clock: TurnClock) -> None:
        clock.transcribed()
        await self._answer(await self._records.typed_turn(text), clock)

    async def _answer(self, saved: SavedTurn, clock: TurnClock) -> None:
        await self.interrupt()  # a turn that began before the last reply did: it wins
        self._reply = _Reply(SpokenReply(saved.reply_id), clock)
        self._replies.put_nowait(self._reply)
        await self._client.send_event(
            event("transcript", messageId=saved.message_id, text=saved.text)
        )
        await self._client.send_event(event("reply_started", messageId=saved.reply_id))

    # -- the reply, from the feed to the client ------------------------------------------------

    async def _follow_feed(self) -> None:
        async for item in feed_events(self._feed):
            self._on_feed(item)
        if self._winding_down:
            return  # wind_down closes the socket once the reply is saved
        # The feed ends when the caller may no longer see the thread, or at shutdown.
        await close_at_feed_end(self._client, self._feed.outbox.ended_by)

    def _on_feed(self, item: FeedEvent) -> None:
        reply = self._reply
        if reply is None:
            return
        mine = item.data.get("messageId") == reply.spoken.message_id
        if item.kind in ("delta", "speech") and mine:
            reply.clock.token()  # the first delta; a speech event stands in if none came
        if item.kind == "speech" and mine:
            reply.sentences.put_nowait(item.data)
        elif (
            item.kind == "message"
            and item.data.get("id") == reply.spoken.message_id
            and item.data.get("status") in _FINAL
            and reply.final_status is None
        ):
            reply.final_status = str(item.data["status"])
            reply.sentences.put_nowait(None)

    async def _speak(self) -> None:
        while True:
            reply = await self._replies.get()
            try:
                await self._speak_reply(reply)
            except Exception:
                log.exception("could not speak reply %s", reply.spoken.message_id)
                if self._reply is reply:
                    await self.interrupt()  # not left half-spoken: cut to what was heard

    async def _speak_reply(self, reply: _Reply) -> None:
        loop = asyncio.get_running_loop()
        clock: float | None = None
        while (sentence := await reply.sentences.get()) is not None:
            if self._reply is not reply:
                return
            pcm = await self._sentence_audio(str(sentence["fileId"]))
            if pcm is None or self._reply is not reply:
                continue
            step = round(codec.bytes_per_ms(self._start) * FRAME_MS)
            step -= step % 2
            reply.mid_sentence = True
            reply.spoken.add(str(sentence["text"]), len(pcm) / codec.bytes_per_ms(self._start))
            await self._client.send_event(
                event(
                    "reply_audio",
                    messageId=reply.spoken.message_id,
                    seq=sentence["seq"],
                    text=sentence["text"],
                    ms=len(pcm) / codec.bytes_per_ms(self._start),
                )
            )
            start_ms = reply.spoken.sentences[-1].start_ms
            clock = loop.time() if clock is None else clock
            reply.audio_clock = clock
            for offset in range(0, len(pcm), step):
                due = clock + (start_ms + offset / codec.bytes_per_ms(self._start) - LEAD_MS) / 1000
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                if self._reply is not reply:
                    return  # interrupted: `clear` has been sent
                frame = pcm[offset : offset + step]
                await self._client.send_audio(frame)
                reply.clock.sent(len(frame) / codec.bytes_per_ms(self._start) / 1000)
            reply.mid_sentence = False
            if self._winding_down:
                await self._end_for_shutdown(reply, clock)
                return
        if self._winding_down and self._reply is reply:
            await self._end_for_shutdown(reply, clock)
            return
        # The reply stays the session's until its audio has played (it is sent LEAD_MS ahead):
        # speech over its last words still interrupts it, and their `played` reports count.
        await self._played_out(reply, clock)
        if self._reply is reply:
            self._reply = None
            message_id, status = reply.spoken.message_id, reply.final_status or "interrupted"
            await self._records.reply_ended(message_id, ReplyEnd(SPOKEN, status), reply.clock)
            await self._client.send_event(
                event(
                    "reply_stopped",
                    messageId=reply.spoken.message_id,
                    status=reply.final_status or "interrupted",
                )
            )

    async def _played_out(self, reply: _Reply, clock: float | None) -> None:
        """Wait until the audio sent for `reply` (paced from `clock`) has played."""
        if clock is not None:
            await asyncio.sleep(max(0.0, clock + reply.spoken.sent_ms / 1000 - self._now()))

    async def _end_for_shutdown(self, reply: _Reply, clock: float | None) -> None:
        """The sentence is sent: wait until it has played, then save what was heard."""
        await self._played_out(reply, clock)
        if self._reply is reply:
            self._reply = None
            reply.spoken.assume_played(reply.spoken.sent_ms)
            await self._save_heard(reply, SHUTDOWN_CUT)
        self._ended.set()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    async def _sentence_audio(self, file_id: str) -> bytes | None:
        """A stored sentence in the session's format and rate; None if it cannot be decoded."""

        stored = await self._records.sentence(file_id)
        if stored is None:
            return None
        try:
            return await asyncio.to_thread(self._convert, *stored)
        except codec.UndecodableSpeech as exc:
            log.warning("cannot send speech %s to a live conversation: %s", file_id, exc)
            return None

    def _convert(self, data: bytes, content_type: str) -> bytes:
        pcm, rate = codec.speech_pcm(data, content_type)
        return codec.outbound(self._start, pcm, rate)
