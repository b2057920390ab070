"""What the provider's events and the client's messages mean for the conversation.

- The provider's turn-taking becomes `user_speech_started`/`_stopped`; a user turn it commits
  becomes a user message, its transcript streamed in as deltas, and `transcript` when complete
  (user_turns.py).
- Response events write the assistant message (responses.py); replies open, end, are cut at
  barge-in and fail as turn_state.py says.
- The client's `played` reports what was heard; a typed turn interrupts the reply, is saved,
  and is answered.

Turn metrics (DESIGN §9 `voice`): the clock starts when the provider reports the end of speech;
"transcript" is the moment the provider took the turn (`response.created`), since its transcript
of the user may come after its answer; the first token is the first transcript or audio delta,
and the first audio is the first frame sent to the client.
"""

from __future__ import annotations

import contextlib
from typing import Any

from voicestack.agent.reply_state import HEARD_CUT
from voicestack.voice.realtime.metrics import TurnClock
from voicestack.voice.relay.events import audio_of, error_of, text_of, user_text
from voicestack.voice.relay.provider import ProviderGone, ProviderLink
from voicestack.voice.relay.responses import ResponseEvents


class Conversation(ResponseEvents):
    """A relayed conversation: provider events and client messages in, client events and thread
    writes out."""

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
