"""Audio of the fake Realtime provider: G.711 codecs, the energy VAD, and the spoken replies."""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import wave
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soxr

Codec = Literal["pcm16", "ulaw", "alaw"]
PCM_RATE = 24_000
G711_RATE = 8_000
WINDOW_MS = 20
TONE_HZ = 440
TONE_AMPLITUDE = 8000
_ESPEAK_TIMEOUT_S = 20


def rate_of(codec: Codec) -> int:
    """The sample rate a Realtime audio format implies: 24 kHz PCM, 8 kHz G.711."""
    return PCM_RATE if codec == "pcm16" else G711_RATE


def bytes_per_ms(codec: Codec) -> int:
    """Encoded bytes per millisecond of mono audio in `codec`."""
    return rate_of(codec) * (2 if codec == "pcm16" else 1) // 1000


def _ulaw_to_linear(byte: int) -> int:
    u = ~byte & 0xFF
    exponent, mantissa = (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if u & 0x80 else magnitude


def _linear_to_ulaw(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sample < 0 else sample, 32635) + 0x84
    exponent = max(0, min(7, magnitude.bit_length() - 8))
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _alaw_to_linear(byte: int) -> int:
    a = byte ^ 0x55
    t, segment = (a & 0x0F) << 4, (a & 0x70) >> 4
    if segment == 0:
        t += 8
    else:
        t = (t + 0x108) << (segment - 1)
    return t if a & 0x80 else -t


def _linear_to_alaw(sample: int) -> int:
    value = sample >> 3
    mask = 0xD5 if value >= 0 else 0x55
    if value < 0:
        value = -value - 1
    segment = next(
        (i for i, end in enumerate((31, 63, 127, 255, 511, 1023, 2047, 4095)) if value <= end), 8
    )
    if segment >= 8:
        return 0x7F ^ mask
    low = (value >> 1) if segment < 2 else (value >> segment)
    return ((segment << 4) | (low & 0x0F)) ^ mask


@functools.cache
def _decode_table(codec: Codec) -> np.ndarray:
    convert = _ulaw_to_linear if codec == "ulaw" else _alaw_to_linear
    return np.array([convert(b) for b in range(256)], dtype=np.int16)


@functools.cache
def _encode_table(codec: Codec) -> np.ndarray:
    convert = _linear_to_ulaw if codec == "ulaw" else _linear_to_alaw
    return np.array([convert(s) for s in range(-32768, 32768)], dtype=np.uint8)


def decode(data: bytes, codec: Codec) -> np.ndarray:
    """Decode audio in `codec` to int16 samples at the codec's rate."""
    if codec == "pcm16":
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.int16)
    return _decode_table(codec)[np.frombuffer(data, dtype=np.uint8)]


def encode(samples: np.ndarray, codec: Codec) -> bytes:
    """Encode int16 samples (already at the codec's rate) as `codec` bytes."""
    if codec == "pcm16":
        return samples.astype("<i2").tobytes()
    return _encode_table(codec)[samples.astype(np.int32) + 32768].tobytes()


@dataclass
class VadEvent:
    """A change the VAD heard: speech "started" or "stopped", at a buffer time in ms."""

    kind: Literal["started", "stopped"]
    ms: int


class EnergyVad:
    """Speech detection by RMS over 20 ms windows, counted in audio time, not wall time."""

    def __init__(self, threshold: float, min_speech_ms: int, prefix_padding_ms: int) -> None:
        """Hear windows louder than `threshold` as voiced; speech starts after min_speech_ms."""
        self.threshold, self.min_speech_ms = threshold, min_speech_ms
        self.prefix_padding_ms = prefix_padding_ms
        self.in_speech = False
        self.ms = 0  # audio time consumed so far
        self._pending = np.zeros(0, dtype=np.int16)
        self._voiced_run_ms = self._quiet_run_ms = 0
        self._last_voiced_end = 0
        self.floor_ms = 0  # speech never starts before the last commit or clear

    def feed(self, samples: np.ndarray, rate: int, silence_ms: int) -> list[VadEvent]:
        """Consume samples; return the starts and stops they complete, in order."""
        events: list[VadEvent] = []
        window = rate * WINDOW_MS // 1000
        data = np.concatenate([self._pending, samples])
        whole = len(data) // window * window
        self._pending = data[whole:]
        windows = data[:whole].reshape(-1, window).astype(np.float64)
        for rms in np.sqrt(np.einsum("ij,ij->i", windows, windows) / window).tolist():
            self.ms += WINDOW_MS
            if rms > self.threshold:
                self._voiced_run_ms += WINDOW_MS
                self._quiet_run_ms = 0
                self._last_voiced_end = self.ms
                if not self.in_speech and self._voiced_run_ms >= self.min_speech_ms:
                    self.in_speech = True
                    start = self.ms - self._voiced_run_ms - self.prefix_padding_ms
                    events.append(VadEvent("started", max(self.floor_ms, start)))
            else:
                self._voiced_run_ms = 0
                self._quiet_run_ms += WINDOW_MS
                if self.in_speech and self._quiet_run_ms >= silence_ms:
                    self.in_speech = False
                    events.append(VadEvent("stopped", self._last_voiced_end))
        return events

    def reset_floor(self) -> None:
        """Forget any speech in progress: the buffer was committed or cleared."""
        self.in_speech = False
        self._voiced_run_ms = self._quiet_run_ms = 0
        self.floor_ms = self.ms


def tone(ms: int, rate: int) -> np.ndarray:
    """A steady 440 Hz tone of `ms` milliseconds as int16 samples."""
    t = np.arange(rate * ms // 1000) / rate
    return (TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)


@functools.lru_cache(maxsize=32)
def _espeak(text: str) -> tuple[bytes, int] | None:
    espeak = shutil.which("espeak-ng")
    if espeak is None or not text.strip():
        return None
    done = subprocess.run(
        [espeak, "--stdout", text], capture_output=True, check=False, timeout=_ESPEAK_TIMEOUT_S
    )
    if done.returncode != 0:
        return None
    with wave.open(io.BytesIO(done.stdout), "rb") as wav:
        return wav.readframes(wav.getnframes()), wav.getframerate()


def speech(text: str, rate: int) -> np.ndarray | None:
    """`text` spoken by espeak-ng at `rate`, or None when espeak-ng is not there."""
    spoken = _espeak(text)
    if spoken is None:
        return None
    raw, source_rate = spoken
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768
    resampled = np.asarray(soxr.resample(samples, source_rate, rate), dtype=np.float32)
    clipped: np.ndarray = np.clip(resampled * 32768, -32768, 32767).astype(np.int16)
    return clipped


def reply_audio(text: str, ms: int | None, sound: str, rate: int) -> np.ndarray:
    """The samples of one spoken reply: speech or a tone, `ms` long when given."""
    spoken = speech(text, rate) if sound == "speech" else None
    if spoken is None:
        return tone(ms if ms is not None else max(500, 60 * len(text)), rate)
    if ms is None:
        return spoken
    wanted = rate * ms // 1000
    if len(spoken) >= wanted:
        return spoken[:wanted]
    return np.concatenate([spoken, np.zeros(wanted - len(spoken), dtype=np.int16)])
