"""The user's side of a relayed conversation: each turn the provider commits is a user message,
its transcript streamed in as deltas, `transcript` to the client once complete.

The message is made when the provider commits the turn's audio, before any response to it, so
the thread reads in order even when the transcript arrives after the answer. A turn whose
transcript never comes (the provider's socket dropped, the conversation ended) keeps what
streamed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from voicestack.voice.relay.records import RelayRecords

Send = Callable[..., Awaitable[None]]


@dataclass(slots=True)
class _Turn:
    message_id: str
    seq: int = 0


class UserTurns:
    """The user turns of one conversation whose transcripts are still to come."""

    def __init__(self, records: RelayRecords, send: Send) -> None:
        """Turns are kept in `records`; `send(kind, **fields)` sends an event."""
        self._records = records
        self._send = send
        self._open: dict[str, _Turn] = {}  # provider item id → its message
        self.last: str | None = None  # the user message the next reply answers

    async def committed(self, item_id: str, audio_s: float) -> str:
        """The message of the provider's user item `item_id` (made on first sight)."""
        turn = self._open.get(item_id)
        if turn is None:
            message_id = await self._records.open_user_turn(audio_s)
            turn = self._open[item_id] = _Turn(message_id)
            self.last = message_id
        return turn.message_id

    async def delta(self, item_id: str, text: str, audio_s: float) -> None:
        """A piece of the item's transcript."""
        await self.committed(item_id, audio_s)
        turn = self._open[item_id]
        if not text:
            return
        turn.seq += 1
        await self._records.user_delta(turn.message_id, text, turn.seq)

    async def completed(self, item_id: str, text: str, audio_s: float) -> None:
        """The item's whole transcript: the message is complete."""
        message_id = await self.committed(item_id, audio_s)
        del self._open[item_id]
        text = text.strip()
        await self._records.end_user_turn(message_id, text)
        await self._send("transcript", messageId=message_id, text=text)

    async def failed(self, item_id: str, reason: str, audio_s: float) -> None:
        """The provider could not transcribe the item: the message fails with `reason`."""
        message_id = await self.committed(item_id, audio_s)
        del self._open[item_id]
        error = ("transcription_failed", reason)
        await self._records.end_user_turn(message_id, None, error)
        await self._send("error", code="transcription_failed", message=reason)

    async def typed(self, text: str) -> str:
        """A typed turn, complete at once; its message id."""
        message_id = await self._records.typed_turn(text)
        self.last = message_id
        await self._send("transcript", messageId=message_id, text=text)
        return message_id

    def take_last(self) -> str | None:
        """The user message a new reply answers (each is answered once)."""
        last, self.last = self.last, None
        return last

    async def end_all(self) -> None:
        """Turns whose transcript will not come now keep what streamed."""
        for item_id in list(self._open):
            await self._end(self._open.pop(item_id).message_id)

    async def _end(self, message_id: str) -> None:
        await self._records.end_user_turn(message_id, None)
