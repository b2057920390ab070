"""The state of one relayed reply: its message, its turn clock, its audio on the way out, its
transcript on the way into the thread, and the provider responses that make it.

One reply may take several provider responses: a response that asks for function calls is
followed, once their results are sent, by another, and all of them write the same assistant
message (as one reply's steps do in the pipeline).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from voicestack.agent.llm_calls import ToolCallRequest
from voicestack.agent.reply_state import Claim
from voicestack.agent.stream import DeltaCoalescer
from voicestack.voice.realtime.client import VoiceClient
from voicestack.voice.realtime.metrics import TurnClock
from voicestack.voice.realtime.wire import Start, event
from voicestack.voice.relay.audio import ReplyAudio
from voicestack.voice.relay.session_config import ProviderAudio


@dataclass(slots=True)
class RelayReply:
    """One assistant message being written by the provider."""

    claim: Claim
    clock: TurnClock
    audio: ReplyAudio
    text: DeltaCoalescer
    agent: str  # who answers it now (another agent after a handoff)
    started: float = field(default_factory=time.monotonic)
    response_id: str | None = None  # the provider response writing it now
    responding: bool = False  # that response has not ended
    step: int = 0  # provider responses so far
    requests: list[ToolCallRequest] = field(default_factory=list)  # this response's calls
    tools: asyncio.Task[None] | None = None  # running those calls (a barge-in cancels it)
    transcript: str = ""  # everything the provider said, for the cut at barge-in
    said_step: int = 0  # the response whose transcript came last
    caption: str = ""  # transcript received since the last `reply_audio`
    audio_seq: int = 0
    delta_seq: int = 0
    cut: bool = False  # interrupted: cut to what was heard
    cut_saved: bool = False  # that cut is written (until then, the interrupt ends the reply)
    ended: bool = False  # its final status is written

    @classmethod
    def of(
        cls,
        claim: Claim,
        clock: TurnClock,
        start: Start,
        provider: ProviderAudio,
        agent: str,
        save_delta: Callable[[RelayReply, str], Awaitable[None]],
        flush_ms: float,
    ) -> RelayReply:
        """A reply of `agent` whose transcript pieces are saved by `save_delta`, its audio
        coming as `provider` and going out as `start`."""
        holder: list[RelayReply] = []

        async def flush(text: str) -> None:
            await save_delta(holder[0], text)

        reply = cls(
            claim, clock, ReplyAudio(start, provider), DeltaCoalescer(flush, flush_ms), agent
        )
        holder.append(reply)
        return reply

    @property
    def message_id(self) -> str:
        """The assistant message's id."""
        return self.claim.message_id

    def wall_ms(self) -> int:
        """Milliseconds since the reply began."""
        return int((time.monotonic() - self.started) * 1000)

    async def forward(self, client: VoiceClient, data: bytes) -> None:
        """Send converted audio on: `reply_audio` (with the transcript received since the last
        one), then the audio in 20 ms frames."""
        if not data:
            return
        self.clock.token()
        self.audio_seq += 1
        caption, self.caption = self.caption, ""
        await client.send_event(
            event(
                "reply_audio",
                messageId=self.message_id,
                seq=self.audio_seq,
                text=caption,
                ms=self.audio.ms_of(data),
            )
        )
        loop = asyncio.get_running_loop()
        for frame in self.audio.frames(data):
            await client.send_audio(frame)
            self.audio.sent(frame, loop.time())
            self.clock.sent(self.audio.ms_of(frame) / 1000)

    async def said(self, text: str) -> None:
        """A piece of the provider's transcript: saved (coalesced), and captioned; a later
        response's transcript is set apart from the earlier ones' by a space."""
        self.clock.token()
        if (
            self.said_step != self.step
            and self.transcript
            and not self.transcript[-1].isspace()
            and not text[0].isspace()
        ):
            text = " " + text
        self.said_step = self.step
        self.transcript += text
        self.caption += text
        await self.text.add(text)

    def add_call(self, request: ToolCallRequest) -> None:
        """A function call of the current response (each call once, whichever event told)."""
        if all(known.call_id != request.call_id for known in self.requests):
            self.requests.append(request)
