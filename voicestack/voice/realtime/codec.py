"""Audio between the socket and the session: μ-law ↔ 16-bit PCM by table, resampling by soxr.

Inside a session, audio is mono 16-bit little-endian PCM: 16 kHz on the way in (what the VAD and
the transcriber get), the session's rate on the way out. The tables are G.711's μ-law, built once
with numpy (the stdlib's `audioop` is gone from Python 3.13). Resampling is soxr's streaming
resampler, which keeps its filter state between frames, so frame edges make no clicks.

numpy and soxr are imported by the first live conversation (load_audio_libraries), not with this
module: a server that holds none never loads them (numpy alone is about 0.15 s of a start's CPU).
"""

from __future__ import annotations

import asyncio
import functools
import io
import shutil
import subprocess
import wave
from typing import TYPE_CHECKING

from voicestack.voice.realtime.wire import Start

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import soxr

    Samples = npt.NDArray[np.int16]

VAD_RATE = 16000
# OpenAI's `pcm` speech format: raw 24 kHz 16-bit little-endian mono.
PROVIDER_PCM_RATE = 24000
_BIAS = 0x84
_CLIP = 32635


_audio_libraries_loaded = False


async def load_audio_libraries() -> None:
    """Import numpy and soxr and build the μ-law tables in a worker thread, the first time only.

    A live conversation awaits this before its session is made, so that the imports (about
    0.15 s of CPU) never stall the event loop, and every connection on it, at the first frame of
    a server's first conversation.
    """
    global _audio_libraries_loaded
    if not _audio_libraries_loaded:
        await asyncio.to_thread(_load_audio_libraries)
        _audio_libraries_loaded = True


def _load_audio_libraries() -> None:
    import numpy  # noqa: F401
    import soxr  # noqa: F401

    _mulaw_decode_table()
    _mulaw_encode_table()


@functools.cache
def _mulaw_decode_table() -> Samples:
    import numpy as np

    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((codes & 0x0F) << 3) + _BIAS) << ((codes & 0x70) >> 4)
    linear = np.where(codes & 0x80, _BIAS - magnitude, magnitude - _BIAS)
    return linear.astype(np.int16)


@functools.cache
def _mulaw_encode_table() -> npt.NDArray[np.uint8]:
    import numpy as np

    samples = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(samples < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(samples), _CLIP) + _BIAS
    exponent = np.floor(np.log2(magnitude >> 7)).astype(np.int32).clip(0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    table: npt.NDArray[np.uint8] = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    return table


def mulaw_to_pcm16(data: bytes) -> bytes:
    """G.711 μ-law bytes as 16-bit little-endian PCM."""
    import numpy as np

    return _mulaw_decode_table()[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


def pcm16_to_mulaw(data: bytes) -> bytes:
    """16-bit little-endian PCM as G.711 μ-law bytes (an odd last byte is dropped)."""
    import numpy as np

    samples = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.int32)
    return _mulaw_encode_table()[samples + 32768].tobytes()


class Resampler:
    """A streaming 16-bit PCM resampler (identity when the rates are equal)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self._stream: soxr.ResampleStream | None = None
        if in_rate != out_rate:
            import soxr

            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")

    def __call__(self, pcm: bytes, last: bool = False) -> bytes:
        """The next piece of `pcm` at the output rate; `last` flushes the filter."""
        if self._stream is None:
            return pcm
        import numpy as np

        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.int16)
        out: Samples = self._stream.resample_chunk(samples, last=last)
        return out.astype("<i2").tobytes()


class InboundAudio:
    """The client's frames, in the session's format and rate, as 16 kHz PCM for the VAD."""

    def __init__(self, start: Start) -> None:
        self._mulaw = start.format == "mulaw"
        self._resample = Resampler(start.sample_rate, VAD_RATE)
        self._odd = b""

    def __call__(self, frame: bytes) -> bytes:
        """16 kHz PCM of one frame (a PCM frame may split a sample: the byte waits)."""
        if self._mulaw:
            pcm = mulaw_to_pcm16(frame)
        else:
            data = self._odd + frame
            cut = len(data) // 2 * 2
            pcm, self._odd = data[:cut], data[cut:]
        return self._resample(pcm)


def outbound(start: Start, pcm: bytes, rate: int) -> bytes:
    """A whole sentence's PCM at `rate` in the session's format and rate."""
    resampled = Resampler(rate, start.sample_rate)(pcm, last=True)
    return pcm16_to_mulaw(resampled) if start.format == "mulaw" else resampled


def bytes_per_ms(start: Start) -> float:
    """How many bytes of the session's audio make one millisecond."""
    width = 1 if start.format == "mulaw" else 2
    return start.sample_rate * width / 1000


def wav_of(pcm: bytes, rate: int = VAD_RATE) -> bytes:
    """Mono 16-bit PCM as a WAV file (what a finished turn is stored and transcribed as)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


class UndecodableSpeech(Exception):
    """Stored speech this server cannot turn into PCM."""


def speech_pcm(data: bytes, content_type: str) -> tuple[bytes, int]:
    """Stored speech as mono 16-bit PCM and its rate: WAV and raw `pcm` directly, anything else
    (mp3, opus, ...) through ffmpeg when it is installed. Blocking: call off the event loop."""
    if content_type in ("audio/wav", "audio/x-wav", "audio/wave") or data[:4] == b"RIFF":
        return _wav_pcm(data)
    if content_type in ("audio/pcm", "audio/l16"):
        return data, PROVIDER_PCM_RATE
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise UndecodableSpeech(f"{content_type} needs ffmpeg; use --speech-format wav or pcm")
    command = [ffmpeg, "-v", "error", "-i", "pipe:0", "-ac", "1", "-ar", str(PROVIDER_PCM_RATE)]
    done = subprocess.run(
        [*command, "-f", "s16le", "pipe:1"],
        input=data,
        capture_output=True,
        check=False,
        timeout=30,
    )
    if done.returncode != 0:
        raise UndecodableSpeech(done.stderr.decode(errors="replace").strip()[:200])
    return done.stdout, PROVIDER_PCM_RATE


def _wav_pcm(data: bytes) -> tuple[bytes, int]:
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise UndecodableSpeech("only 16-bit WAV speech is supported")
            frames = wav.readframes(wav.getnframes())
            rate, channels = wav.getframerate(), wav.getnchannels()
    except (wave.Error, EOFError) as exc:
        raise UndecodableSpeech(f"bad WAV: {exc}") from None
    if channels > 1:
        import numpy as np

        stereo = np.frombuffer(frames, dtype="<i2").reshape(-1, channels)
        frames = stereo.mean(axis=1).astype("<i2").tobytes()
    return frames, rate
