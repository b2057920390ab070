"""The audio of the live-conversation bench, and the VAD measured alone on it.

Speech is espeak-ng's, resampled by sox to 16 kHz 16-bit mono; listening sessions send seeded
Gaussian noise at a fixed level (a quiet room's microphone). `vad_alone` runs the turn detector
in this process on the same audio, with and without the energy gate, so the server's CPU can be
split into the VAD and the rest.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voicestack.voice.realtime.energy import SILENT_DB
from voicestack.voice.realtime.turns import (
    CHUNK_MS,
    SpeechStopped,
    TurnDetector,
    TurnSettings,
)

RATE = 16000
FRAME_BYTES = 640  # 20 ms, what the sessions send
FRAME_S = 0.02


def speech_pcm(workdir: Path, text: str) -> bytes:
    """`text` spoken by espeak-ng as 16 kHz 16-bit mono PCM, trailing silence trimmed."""
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if espeak is None or sox is None:
        raise SystemExit("bench.realtime needs espeak-ng and sox: apt-get install espeak-ng sox")
    wav, raw = workdir / "speech.wav", workdir / "speech.raw"
    subprocess.run([espeak, "-w", str(wav), text], check=True)
    convert = [sox, str(wav), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer"]
    subprocess.run([*convert, "-t", "raw", str(raw)], check=True)
    samples = np.frombuffer(raw.read_bytes(), "<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 64)
    return samples[: int(loud[-1]) + 1].tobytes()


def noise_pcm(ms: int, dbfs: float, seed: int = 1) -> bytes:
    """`ms` of Gaussian noise at an RMS level of `dbfs`."""
    samples = np.random.default_rng(seed).normal(0.0, 1.0, RATE * ms // 1000)
    samples *= 32768 * 10 ** (dbfs / 20) / np.sqrt(np.mean(samples * samples))
    pcm: bytes = np.clip(samples, -32768, 32767).astype("<i2").tobytes()
    return pcm


def silence(ms: int) -> bytes:
    """`ms` of digital silence."""
    return bytes(RATE * ms // 1000 * 2)


def frames(pcm: bytes) -> list[bytes]:
    """`pcm` cut into 20 ms frames (the last one may be short)."""
    return [pcm[at : at + FRAME_BYTES] for at in range(0, len(pcm), FRAME_BYTES)]


@dataclass(frozen=True)
class VadCost:
    """The turn detector alone on some audio: CPU per 32 ms chunk, and how often Silero ran."""

    chunks: int
    model_runs: int
    cpu_ms_per_chunk: float

    @property
    def core_percent(self) -> float:
        """The share of a core a session sending this audio in real time costs in VAD."""
        return self.cpu_ms_per_chunk / CHUNK_MS * 100


def vad_cost(pcm: bytes, floor_dbfs: float, repeat: int = 1) -> VadCost:
    """Feed `pcm` (`repeat` times, one detector) through the turn detector; its cost."""
    turns = TurnDetector(TurnSettings(energy_floor_dbfs=floor_dbfs))
    start = time.process_time()
    for _ in range(repeat):
        for at in range(0, len(pcm), FRAME_BYTES):
            turns.feed(pcm[at : at + FRAME_BYTES])
    spent = time.process_time() - start
    chunks = turns.gate.chunks
    return VadCost(chunks, turns.gate.model_runs, spent * 1000 / max(chunks, 1))


def vad_alone(
    listening: bytes, speaking: bytes, floor_dbfs: float
) -> dict[str, tuple[VadCost, VadCost]]:
    """(gate off, gate at `floor_dbfs`) on the audio of a listening and a speaking session."""
    return {
        name: (vad_cost(pcm, SILENT_DB, repeat), vad_cost(pcm, floor_dbfs, repeat))
        for name, pcm, repeat in (("listening", listening, 2), ("speaking", speaking, 2))
    }


def vad_tail_ms(pcm: bytes, speech_end: int, silence_ms: int, floor_dbfs: float) -> float:
    """Audio time from the end of the speech in `pcm` to the end of its turn, beyond the silence
    window, fed in the sessions' 20 ms frames: how late the turn detector ends the turn."""
    turns = TurnDetector(TurnSettings(silence_ms=silence_ms, energy_floor_dbfs=floor_dbfs))
    for at in range(0, len(pcm), FRAME_BYTES):
        if any(isinstance(e, SpeechStopped) for e in turns.feed(pcm[at : at + FRAME_BYTES])):
            return (at + FRAME_BYTES - speech_end) / 32 - silence_ms
    return float("nan")
