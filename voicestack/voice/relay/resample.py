"""A streaming resampler for the relay's fixed ratios (16 or 8 kHz ↔ 24 kHz) that holds no audio.

soxr's streaming resampler filters in blocks: at its `HQ` quality a 20 ms frame waits 40 ms
(16↔24 kHz) to 80 ms (8↔24 kHz) inside it, and its `QQ` quality, which holds nothing, has no
low-pass filter at all (images and aliases pass). A relay must add almost nothing to each
frame, so this one is a polyphase FIR: every frame comes out at once, exactly as long as it
went in (at the other rate), and the only delay is the filter's group delay (about 1.2 ms at
16↔24 kHz, 2.4 ms at 8↔24 kHz). The filter is a Kaiser-windowed sinc whose stopband (≥ 60 dB)
begins at the lower rate's Nyquist frequency, so nothing above it is imaged or aliased into
the band; the passband is flat to 80 % of that frequency (speech keeps its consonants).
bench/realtime_resample.py measures it next to soxr's qualities.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float32]

STOPBAND_DB = 60.0
PASSBAND = 0.8  # of the lower rate's Nyquist frequency


def _design(up: int, in_rate: int, out_rate: int) -> Floats:
    """Low-pass taps at the upsampled rate, as `up` phases of equal length (gain `up`)."""
    fs = in_rate * up
    nyquist = min(in_rate, out_rate) / 2
    edge, stop = PASSBAND * nyquist, nyquist
    width = (stop - edge) / fs  # transition, in cycles per sample
    beta = 0.1102 * (STOPBAND_DB - 8.7)
    taps = math.ceil((STOPBAND_DB - 7.95) / (14.36 * width)) + 1
    taps += -taps % up  # every phase the same length
    cutoff = (edge + stop) / 2 / fs
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(taps, beta)
    h *= up / h.sum()
    # Phase p multiplies input x[b - k] by h[p + k·up]; reversed, a phase is a dot product
    # with the input window x[b-K+1 .. b], which is what np.correlate slides.
    return np.stack([h[p::up][::-1] for p in range(up)]).astype(np.float32)


class PolyphaseResampler:
    """Streaming 16-bit PCM resampling by `out_rate / in_rate` (a ratio of small integers)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        g = math.gcd(in_rate, out_rate)
        self._up, self._down = out_rate // g, in_rate // g
        self._in_rate = in_rate
        self._phases = _design(self._up, in_rate, out_rate)
        self._width = int(self._phases.shape[1])
        self._history: Floats = np.zeros(self._width - 1, dtype=np.float32)
        self._offset = 0  # the next output's upsampled position, from the next input sample

    @property
    def delay_ms(self) -> float:
        """The filter's group delay in ms (what the signal is late by; no sample is held)."""
        return float((self._width * self._up - 1) / 2 / (self._up * self._in_rate) * 1000)

    def __call__(self, pcm: bytes, last: bool = False) -> bytes:
        """`pcm` at the output rate, at once (`last` changes nothing: nothing is held)."""
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32)
        if not len(samples):
            return b""
        buffer = np.concatenate((self._history, samples))
        self._history = buffer[len(buffer) - self._width + 1 :]
        # Every upsampled position, phase by phase (row i: the outputs after input i), then
        # every `down`-th of them; cheaper in numpy than gathering only the kept ones.
        upsampled = np.stack(
            [np.correlate(buffer, phase, "valid") for phase in self._phases], axis=1
        ).ravel()
        out = upsampled[self._offset :: self._down]
        self._offset = (self._offset - len(upsampled)) % self._down
        data: bytes = np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes()
        return data
