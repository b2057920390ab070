"""The energy gate in front of Silero VAD: quiet chunks are silence without running the model.

Silero costs one to three milliseconds of CPU per 32 ms chunk, on the event loop, and a session
that listens mostly hears silence. The gate measures each chunk's level (RMS in dBFS, a few
microseconds with numpy) and lets the model run only when the level says "maybe speech": at or
above the fixed floor (`--vad-energy-floor-dbfs`) and above the room's own noise by a margin.
The model stays the decider: a chunk the gate lets through is speech only if Silero says so.

The noise level is learned from chunks that are not speech: it starts just under the floor,
falls at once to a quieter chunk and rises slowly, so a steady hum or fan lifts the bar while a
voice, which the model marks as speech, never does. Once the gate opens it stays open for
`HANGOVER_MS` after the last loud chunk, so the quiet ends of words and the pauses between them
are judged by the model, and the detector keeps it open for a whole turn. A floor of
`SILENT_DB` (-120) turns the gate off.

The level also ends turns sooner. Silero keeps saying "speech" for up to ~90 ms after a voice
stops (its recurrent state decays over a few chunks, more or less by where the chunk edges
fall), so in a turn only a `loud` speech chunk restarts the silence window, and the quiet end of
that chunk already counts as silence (`quiet_tail_ms`, in 8 ms steps): the turn's silence starts
at the last audible moment, not at the end of the model's afterglow or of a 32 ms chunk.
"""

from __future__ import annotations

import math

FULL_SCALE = 32768.0
MARGIN_DB = 9.0  # a chunk this far above the learned noise may be speech
NOISE_RISE_DB = 0.5  # per 32 ms chunk: ~16 dB a second
HANGOVER_MS = 320
SILENT_DB = -120.0  # the level of digital silence
TAIL_STEP_MS = 8  # the resolution at which the quiet end of a chunk is measured


def level_dbfs(chunk: bytes) -> float:
    """The RMS level of 16-bit PCM in dBFS (`SILENT_DB` for digital silence)."""
    import numpy as np  # loaded by the first live conversation, not by the server's start

    samples = np.frombuffer(chunk, dtype="<i2").astype(np.float32)
    power = float(np.dot(samples, samples)) / max(len(samples), 1)
    if power <= 0.0:
        return SILENT_DB
    return max(10.0 * math.log10(power) - 20.0 * math.log10(FULL_SCALE), SILENT_DB)


class EnergyGate:
    """Says, chunk by chunk, whether the VAD model needs to run; counts how often it did."""

    def __init__(self, floor_dbfs: float, chunk_ms: int) -> None:
        self._floor = floor_dbfs
        self._chunk_ms = chunk_ms
        self._noise = floor_dbfs - MARGIN_DB  # what the floor alone would let through
        self._open_ms = 0  # hangover left
        self._level = SILENT_DB  # of the last chunk
        self.chunks = 0
        self.model_runs = 0

    @property
    def loud(self) -> bool:
        """True when the last chunk could be speech by its level alone (always, gate off)."""
        if self._floor <= SILENT_DB:
            return True
        return self._level >= self._floor and self._level >= self._noise + MARGIN_DB

    @property
    def on(self) -> bool:
        """False when the floor (`SILENT_DB`) turns the gate off."""
        return self._floor > SILENT_DB

    def quiet_head_ms(self, pcm: bytes) -> int:
        """How long `pcm` (16 kHz PCM, shorter than a chunk) is too quiet to be speech from its
        start, in whole steps of `TAIL_STEP_MS`, when all of those steps are; else 0."""
        step = 16 * TAIL_STEP_MS * 2
        steps = len(pcm) // step
        if not self.on or not steps:
            return 0
        bar = max(self._floor, self._noise + MARGIN_DB)
        if any(level_dbfs(pcm[at : at + step]) >= bar for at in range(0, steps * step, step)):
            return 0
        return steps * TAIL_STEP_MS

    def quiet_tail_ms(self, chunk: bytes) -> int:
        """How long the end of `chunk` (16 kHz PCM) is too quiet to be speech, in steps of
        `TAIL_STEP_MS`; 0 with the gate off."""
        if not self.on:
            return 0
        step = 16 * TAIL_STEP_MS * 2
        bar = max(self._floor, self._noise + MARGIN_DB)
        quiet = 0
        for end in range(len(chunk), step - 1, -step):
            if level_dbfs(chunk[end - step : end]) >= bar:
                break
            quiet += TAIL_STEP_MS
        return quiet

    @property
    def noise_dbfs(self) -> float:
        """The learned level of the room's noise."""
        return self._noise

    def opens(self, chunk: bytes, hold: bool = False) -> bool:
        """True when the model must judge `chunk`; `hold` (in a turn) keeps the gate open."""
        self.chunks += 1
        if self._floor <= SILENT_DB:  # the gate is off
            self.model_runs += 1
            return True
        self._level = level_dbfs(chunk)
        loud = self.loud
        if loud:
            self._open_ms = HANGOVER_MS
        elif self._open_ms > 0:
            self._open_ms -= self._chunk_ms
            loud = True
        if loud or hold:
            self.model_runs += 1
            return True
        self.not_speech()
        return False

    def not_speech(self) -> None:
        """The last chunk was not speech: let the noise estimate follow its level."""
        self._noise = min(self._level, self._noise + NOISE_RISE_DB)
