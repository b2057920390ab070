"""Raw speech samples: what a speech provider answers for `response_format="pcm"`.

OpenAI's (and Kokoro-FastAPI's) `pcm` is headerless 24 kHz 16-bit little-endian mono. It needs
no decoding to be played into a call, and only a 44-byte WAV header to be stored as a file the
page can play.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

PCM_SAMPLE_RATE = 24_000
_SAMPLE_BYTES = 2


class NotPcm(ValueError):
    """Audio that is not 16-bit mono PCM (in a WAV or without a header)."""


@dataclass(frozen=True, slots=True)
class Pcm:
    """Mono 16-bit little-endian samples and their rate."""

    data: bytes
    sample_rate: int = PCM_SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        """Seconds of audio."""
        return len(self.data) // _SAMPLE_BYTES / self.sample_rate

    def wav(self) -> bytes:
        """The samples in a WAV file, as stored for the page to play."""
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(_SAMPLE_BYTES)
            out.setframerate(self.sample_rate)
            out.writeframes(self.data[: len(self.data) // _SAMPLE_BYTES * _SAMPLE_BYTES])
        return buffer.getvalue()

    @classmethod
    def answered(cls, data: bytes) -> Pcm:
        """A provider's answer to a `pcm` request: raw samples at 24 kHz, or a 16-bit mono WAV
        from a server that answers WAV whatever it is asked for (its header gives the rate)."""
        if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
            return cls(data)
        try:
            with wave.open(io.BytesIO(data), "rb") as wav:
                shape = wav.getnchannels(), wav.getsampwidth()
                if shape != (1, _SAMPLE_BYTES):
                    raise NotPcm(f"a WAV of {shape[0]} channels, {8 * shape[1]}-bit")
                return cls(wav.readframes(wav.getnframes()), wav.getframerate())
        except (wave.Error, EOFError) as exc:
            raise NotPcm(f"a WAV this server cannot read ({exc})") from None
