"""Where a live conversation keeps its turns and replies (DESIGN §9).

A VoiceSession hears turns, follows the thread and speaks replies; what it saves, and the
sentence audio it reads, go through TurnRecords. On the server that holds the database that is
the store itself (StoreRecords). On an edge the session runs near its client, and its records
are kept by the primary, over NATS (voicestack/scale/edge_voice.py): the audio stays on the edge,
and only each turn's recording and text cross.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from voicestack.agent.membership import require_thread
from voicestack.agent.threads import start_user_turn
from voicestack.identity import Caller
from voicestack.store.db import WriteDB
from voicestack.store.readers import Snapshot
from voicestack.store.store import Store
from voicestack.voice.files import Audio
from voicestack.voice.formats import format_named
from voicestack.voice.provider import Transcriber
from voicestack.voice.realtime import codec
from voicestack.voice.realtime.metrics import TurnClock, save_cut, save_hung_up, save_spoken
from voicestack.voice.turn import VoiceTurn, save_voice_turn

# How a reply's part in a conversation ended (`TurnRecords.reply_ended`).
SPOKEN, CUT, HUNG_UP = "spoken", "cut", "hung_up"


@dataclass(frozen=True, slots=True)
class SavedTurn:
    """A turn saved with its pending reply."""

    message_id: str
    reply_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ReplyEnd:
    """How a reply's part in a conversation ended: `how` is SPOKEN (to its end; `status` is its
    text's), CUT (barge-in or shutdown: `heard` is what was heard, `why` the cut's reason) or
    HUNG_UP (the conversation ended; `status` is None while its text still streamed)."""

    how: str
    status: str | None = None
    heard: str = ""
    why: str = ""

    def encode(self, clock: TurnClock) -> dict[str, Any]:
        """As an edge sends it to the primary, with the turn's clock."""
        return {**asdict(self), "clock": asdict(clock)}

    @classmethod
    def decode(cls, body: dict[str, Any]) -> tuple[ReplyEnd, TurnClock]:
        """What `encode` made; KeyError, TypeError or ValueError when it is not that."""
        end = cls(
            str(body["how"]),
            None if body.get("status") is None else str(body["status"]),
            str(body.get("heard") or ""),
            str(body.get("why") or ""),
        )
        if end.how not in (SPOKEN, CUT, HUNG_UP):
            raise ValueError(f"unknown reply end {end.how!r}")
        clock = TurnClock(**{k: v for k, v in body["clock"].items() if k in _CLOCK_FIELDS})
        return end, clock


_CLOCK_FIELDS = frozenset(TurnClock.__dataclass_fields__)


def save_reply_end(db: WriteDB, message_id: str, end: ReplyEnd, clock: TurnClock) -> None:
    """Save how the reply's part ended, with its voice metrics."""
    if end.how == CUT:
        save_cut(db, message_id, clock, end.heard, end.why)
    elif end.how == HUNG_UP:
        save_hung_up(db, message_id, clock, end.status)
    else:
        save_spoken(db, message_id, clock, end.status or "interrupted")


def save_typed_turn(db: WriteDB, thread_id: str, user: Caller | None, text: str) -> SavedTurn:
    """A typed turn of a conversation on the thread, with its reply to speak."""
    thread = require_thread(db, thread_id, user)
    ids = start_user_turn(db, thread, text, user, speak=True)
    return SavedTurn(ids["messageId"], ids["replyId"], text)


def sentence_file(snapshot: Snapshot, file_id: str) -> tuple[bytes, str] | None:
    """A stored sentence's bytes and content type; None when there is no such file."""
    row = snapshot.db().one("SELECT data, content_type FROM files WHERE id = ?", (file_id,))
    return (bytes(row["data"]), str(row["content_type"])) if row else None


class TurnRecords(Protocol):
    """What a live conversation saves, and the sentence audio it reads."""

    async def spoken_turn(self, pcm: bytes, clock: TurnClock) -> SavedTurn | None:
        """Transcribe a spoken turn (`pcm`: 16-bit mono at codec.VAD_RATE), stamp `clock` when
        its text is known, and save it with its reply; None, nothing saved, when no words were
        heard. Raises ProviderError when transcription fails, FunctionError when the caller
        may not."""
        ...

    async def typed_turn(self, text: str) -> SavedTurn:
        """Save a typed turn with its reply. Raises FunctionError when the caller may not."""
        ...

    async def reply_ended(self, message_id: str, end: ReplyEnd, clock: TurnClock) -> None:
        """Save how a reply's part in the conversation ended, with its metrics."""
        ...

    async def sentence(self, file_id: str) -> tuple[bytes, str] | None:
        """A spoken sentence's audio and content type; None when it is not there."""
        ...


class StoreRecords:
    """TurnRecords in this server's own store, transcribed by its provider."""

    def __init__(
        self, thread_id: str, user: Caller | None, store: Store, transcriber: Transcriber
    ) -> None:
        self._thread_id = thread_id
        self._user = user
        self._store = store
        self._transcriber = transcriber

    async def spoken_turn(self, pcm: bytes, clock: TurnClock) -> SavedTurn | None:
        """As TurnRecords.spoken_turn: transcribed by this server's provider."""
        return await self.transcribed_turn(codec.wav_of(pcm), pcm_seconds(pcm), clock)

    async def transcribed_turn(
        self, wav: bytes, seconds: float, clock: TurnClock | None = None
    ) -> SavedTurn | None:
        """Transcribe a turn's `wav` (`seconds` long) and save it with its reply, stamping
        `clock` when its text is known; None, nothing saved, when no words were heard."""
        fmt = format_named("wav")
        assert fmt is not None
        heard = await self._transcriber.transcribe(wav, fmt, "turn")
        audio_in = seconds
        if clock is not None:
            clock.transcribed(seconds)
        text = heard.text.strip()
        if not text:
            return None
        audio = Audio.of(wav, fmt.content_type, audio_in)
        turn = VoiceTurn(self._thread_id, self._user, text, audio, speak=True)
        saved = await self._store.write(lambda db: save_voice_turn(db, turn))
        return SavedTurn(saved.value["messageId"], saved.value["replyId"], text)

    async def typed_turn(self, text: str) -> SavedTurn:
        """As TurnRecords.typed_turn."""
        saved = await self._store.write(
            lambda db: save_typed_turn(db, self._thread_id, self._user, text)
        )
        turn: SavedTurn = saved.value
        return turn

    async def reply_ended(self, message_id: str, end: ReplyEnd, clock: TurnClock) -> None:
        """As TurnRecords.reply_ended."""
        await self._store.write(lambda db: save_reply_end(db, message_id, end, clock))

    async def sentence(self, file_id: str) -> tuple[bytes, str] | None:
        """As TurnRecords.sentence."""
        found: tuple[bytes, str] | None = await self._store.read(
            lambda snap: sentence_file(snap, file_id)
        )
        return found


def pcm_seconds(pcm: bytes) -> float:
    """How long a turn's PCM (16-bit mono at codec.VAD_RATE) lasts."""
    return len(pcm) / 2 / codec.VAD_RATE
