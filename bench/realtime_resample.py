"""Streaming resamplers for relay mode's rates, side by side: what each holds back, what it emits
per 20 ms frame, how well it filters, and what it costs. `python -m bench.realtime_resample`.

Each is fed 20 ms frames of a tone, one at a time, as the relay feeds its resampler:

- held: ms of audio fed but not yet emitted, after each frame (average and worst);
- emitted: ms of audio that come out per frame (least and most);
- image: energy above the lower rate's Nyquist frequency after upsampling a tone at 40 % of
  it, in dB relative to the tone (what the filter lets through that was never in the signal);
- alias: a tone at 125 % of the lower rate's Nyquist frequency, downsampled: what folds back
  into the band, in dB relative to an in-band tone;
- 80 %: the level of a tone at 80 % of the lower Nyquist frequency after upsampling (passband
  droop);
- µs: median time of one frame's call, up and down.

soxr's qualities (QQ, LQ, MQ, HQ, VHQ) run as voicestack.voice.realtime.codec.Resampler runs
HQ (ResampleStream, int16); `polyphase` is voicestack.voice.relay.resample.PolyphaseResampler.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import soxr

from voicestack.voice.relay.resample import PolyphaseResampler

Convert = Callable[[bytes], bytes]
QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")
PAIRS = ((16000, 24000), (8000, 24000))


def soxr_stream(quality: str) -> Callable[[int, int], Convert]:
    """A maker of soxr streaming resamplers at `quality`."""

    def make(in_rate: int, out_rate: int) -> Convert:
        stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

        def convert(pcm: bytes) -> bytes:
            samples = np.frombuffer(pcm, dtype="<i2")
            out: bytes = stream.resample_chunk(samples).astype("<i2").tobytes()
            return out

        return convert

    return make


def polyphase(in_rate: int, out_rate: int) -> Convert:
    """The relay's resampler."""
    return PolyphaseResampler(in_rate, out_rate)


def tone(hz: float, rate: int, seconds: float = 1.0) -> npt.NDArray[np.int16]:
    """A sine at `hz`, amplitude 8000."""
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype("<i2")


def feed(
    make: Callable[[int, int], Convert], in_rate: int, out_rate: int, x: npt.NDArray[np.int16]
) -> tuple[npt.NDArray[np.float64], list[float], list[float], list[float]]:
    """Output, ms held after each frame, ms emitted by each frame, and µs per frame."""
    convert, step = make(in_rate, out_rate), in_rate // 50
    outs, held, emitted, micros = [], [], [], []
    fed = got = 0
    for at in range(0, len(x) - step + 1, step):
        started = time.perf_counter()
        out = convert(x[at : at + step].tobytes())
        micros.append((time.perf_counter() - started) * 1e6)
        fed += step
        got += len(out) // 2
        held.append(fed * 1000 / in_rate - got * 1000 / out_rate)
        emitted.append(len(out) // 2 * 1000 / out_rate)
        outs.append(np.frombuffer(out, dtype="<i2"))
    return np.concatenate(outs).astype(float), held, emitted, micros


def power(y: npt.NDArray[np.float64], rate: int, band: tuple[float, float] | None = None) -> float:
    """Energy of `y` after its first quarter (the filter settled), within `band` (Hz)."""
    y = y[len(y) // 4 :]
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    if band is None:
        return float(spectrum.sum())
    freqs = np.fft.rfftfreq(len(y), 1 / rate)
    return float(spectrum[(freqs >= band[0]) & (freqs < band[1])].sum())


def db(ratio: float) -> float:
    """`ratio` of energies in dB."""
    return float(10 * np.log10(ratio + 1e-30))


def row(name: str, make: Callable[[int, int], Convert], low: int, high: int) -> str:
    """One resampler at one pair of rates."""
    nyquist = low / 2
    up, held_up, emit_up, us_up = feed(make, low, high, tone(0.4 * nyquist, low))
    image = db(power(up, high, (nyquist, high / 2)) / power(up, high))
    flat = db(power(feed(make, low, high, tone(0.8 * nyquist, low))[0], high) / power(up, high))
    down, held_down, _, us_down = feed(make, high, low, tone(1.25 * nyquist, high))
    in_band = feed(make, high, low, tone(0.4 * nyquist, high))[0]
    alias = db(power(down, low) / power(in_band, low))
    held = held_up + held_down
    return (
        f"  {name:<10}{low // 1000:>3}↔{high // 1000}k  held {np.mean(held):5.1f} /"
        f" {np.max(held):5.1f} ms  emitted {min(emit_up):5.1f}-{max(emit_up):5.1f} ms"
        f"  image {image:5.0f} dB  alias {alias:5.0f} dB  80% {flat:+5.1f} dB"
        f"  µs {np.median(us_up):4.0f} / {np.median(us_down):4.0f}"
    )


def main() -> None:
    """Print the table."""
    print("resampler   rates     held avg / worst    emitted per 20 ms frame (up)")
    makers = [(q, soxr_stream(q)) for q in QUALITIES] + [("polyphase", polyphase)]
    for low, high in PAIRS:
        for name, make in makers:
            print(row(name, make, low, high))
    for low, high in PAIRS:
        delay = PolyphaseResampler(low, high).delay_ms
        print(f"  polyphase group delay {low // 1000}→{high // 1000}k: {delay:.2f} ms")


if __name__ == "__main__":
    main()
