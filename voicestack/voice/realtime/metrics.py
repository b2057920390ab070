"""When each step of a live turn happened, and how much audio went in and out (DESIGN §9 `voice`).

A turn's clock starts when the VAD decides the user stopped speaking (or a typed turn arrives)
and is stamped with `time.monotonic()` as the transcript comes back, the reply's first token
shows on the feed, and its first audio frame is sent. The parts add up to `voiceToVoiceMs`,
the wait the user hears; a part that never happened (the reply was cut before any audio) is
None. The metrics are saved on the reply once it has ended, spoken out or interrupted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from voicestack.agent.voice_metrics import save_voice_metrics
from voicestack.store.db import WriteDB
from voicestack.voice.realtime.stops import cut_to_heard, stop_unfinished


def _ms(start: float | None, end: float | None) -> int | None:
    return None if start is None or end is None else max(0, round((end - start) * 1000))


@dataclass(slots=True)
class TurnClock:
    """The moments of one turn (monotonic seconds) and its audio seconds in and out."""

    end_of_speech: float
    audio_in_seconds: float = 0.0
    transcript: float | None = None
    first_token: float | None = None
    first_audio: float | None = None
    audio_out_seconds: float = 0.0

    @classmethod
    def ended_now(cls) -> TurnClock:
        """A clock for a turn whose speech (or typed text) ended just now."""
        return cls(time.monotonic())

    def transcribed(self, audio_in_seconds: float = 0.0) -> None:
        """The turn's text is known; `audio_in_seconds` is how long the user spoke."""
        self.transcript = time.monotonic()
        self.audio_in_seconds = audio_in_seconds

    def token(self) -> None:
        """The reply's text began (only the first call counts)."""
        if self.first_token is None:
            self.first_token = time.monotonic()

    def sent(self, seconds: float) -> None:
        """A frame of `seconds` of reply audio was sent to the client."""
        if self.first_audio is None:
            self.first_audio = time.monotonic()
        self.audio_out_seconds += seconds

    def voice(self, *, interrupted: bool) -> dict[str, Any]:
        """The metrics as saved on the reply (DESIGN §9 `voice`)."""
        return {
            "endOfSpeechToTranscriptMs": _ms(self.end_of_speech, self.transcript),
            "transcriptToFirstTokenMs": _ms(self.transcript, self.first_token),
            "firstTokenToFirstAudioMs": _ms(self.first_token, self.first_audio),
            "voiceToVoiceMs": _ms(self.end_of_speech, self.first_audio),
            "audioInSeconds": round(self.audio_in_seconds, 3),
            "audioOutSeconds": round(self.audio_out_seconds, 3),
            "interrupted": interrupted,
        }


def save_spoken(db: WriteDB, message_id: str, clock: TurnClock, status: str) -> None:
    """A reply spoken to its end (or failed): save its metrics."""
    save_voice_metrics(db, message_id, clock.voice(interrupted=status == "interrupted"))


def save_cut(db: WriteDB, message_id: str, clock: TurnClock, heard: str, why: str) -> None:
    """Barge-in or shutdown (`why`, as for cut_to_heard): the reply is cut to what was `heard`,
    and its metrics saved as interrupted."""
    cut_to_heard(db, message_id, heard, why)
    save_voice_metrics(db, message_id, clock.voice(interrupted=True))


def save_hung_up(db: WriteDB, message_id: str, clock: TurnClock, status: str | None) -> None:
    """The conversation ended during the reply (its text's final `status`, None while it still
    streamed): stop it if unfinished, and save its metrics."""
    stopped = status is None and stop_unfinished(db, message_id)
    interrupted = stopped or status == "interrupted"
    save_voice_metrics(db, message_id, clock.voice(interrupted=interrupted))
