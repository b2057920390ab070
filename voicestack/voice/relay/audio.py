"""Audio between the client and the provider, and how much of a reply the listener has heard.

The provider hears and speaks 24 kHz 16-bit PCM; the client speaks its session's format and
rate (16/24 kHz PCM from a browser, 8 kHz μ-law from a phone), so both ways are converted with
the live conversation's codec (μ-law tables, soxr's streaming resampler).

Reply audio is forwarded as it arrives, not paced: a relay adds no wait of its own, and the
client (or Twilio) buffers it. What has been heard is therefore what the client reports
(`played`, or Twilio's echoed marks); a client that never reports is taken to play audio as
it arrives, from the reply's first frame, up to what was sent. The transcript heard is cut in
proportion: the words of the reply's transcript, times the share of its audio played.
"""

from __future__ import annotations

import math

from voicestack.voice.realtime import codec
from voicestack.voice.realtime.wire import Start
from voicestack.voice.relay.session_config import PROVIDER_RATE

FRAME_MS = 20
_PROVIDER_BYTES_PER_MS = PROVIDER_RATE * 2 / 1000


class InboundAudio:
    """The client's frames as 24 kHz PCM for the provider."""

    def __init__(self, start: Start) -> None:
        self._mulaw = start.format == "mulaw"
        self._resample = codec.Resampler(start.sample_rate, PROVIDER_RATE)
        self._odd = b""

    def __call__(self, frame: bytes) -> bytes:
        """24 kHz PCM of one frame (a PCM frame may split a sample: the byte waits)."""
        if self._mulaw:
            pcm = codec.mulaw_to_pcm16(frame)
        else:
            data = self._odd + frame
            cut = len(data) // 2 * 2
            pcm, self._odd = data[:cut], data[cut:]
        return self._resample(pcm)


class ReplyAudio:
    """One reply's audio on its way to the client: converted, cut in frames, and accounted."""

    def __init__(self, start: Start) -> None:
        self._start = start
        self._resample = self._resampler()
        self._bytes_per_ms = codec.bytes_per_ms(start)
        step = round(self._bytes_per_ms * FRAME_MS)
        self._step = step - step % 2 if start.format == "pcm16" else step
        self.item_id: str | None = None  # the provider's current audio item, for truncation
        self.item_start_ms = 0.0  # audio sent to the client before that item
        self.item_provider_start_ms = 0.0  # audio the provider sent before that item
        self.provider_ms = 0.0  # audio the provider sent
        self.sent_ms = 0.0  # audio sent to the client
        self.first_sent: float | None = None  # loop time of the first frame sent
        self.reported_ms: int | None = None  # what the client says it played

    def _resampler(self) -> codec.Resampler:
        return codec.Resampler(PROVIDER_RATE, self._start.sample_rate)

    def begin_item(self, item_id: str) -> None:
        """The provider's audio item `item_id` begins (after what was sent so far)."""
        if item_id != self.item_id:
            self.item_id = item_id
            self.item_start_ms = self.sent_ms
            self.item_provider_start_ms = self.provider_ms

    @property
    def item_ms(self) -> float:
        """How much audio the provider sent in its current item."""
        return self.provider_ms - self.item_provider_start_ms

    def convert(self, pcm: bytes, last: bool = False) -> bytes:
        """Provider PCM in the client's format and rate; `last` flushes the resampler at the
        end of an audio item, and the next item (a later response's) gets a fresh one."""
        self.provider_ms += len(pcm) / _PROVIDER_BYTES_PER_MS
        out = self._resample(pcm, last=last)
        if last:
            self._resample = self._resampler()
        return codec.pcm16_to_mulaw(out) if self._start.format == "mulaw" else out

    def frames(self, data: bytes) -> list[bytes]:
        """`data` in frames of 20 ms."""
        return [data[offset : offset + self._step] for offset in range(0, len(data), self._step)]

    def ms_of(self, data: bytes) -> float:
        """How long `data` (client format) plays."""
        return len(data) / self._bytes_per_ms

    def sent(self, data: bytes, now: float) -> None:
        """`data` was sent to the client at loop time `now`."""
        if self.first_sent is None:
            self.first_sent = now
        self.sent_ms += self.ms_of(data)

    def report(self, ms: int) -> None:
        """The client played `ms` of this reply."""
        self.reported_ms = max(self.reported_ms or 0, ms)

    def played_ms(self, now: float) -> int:
        """How much the listener has heard by loop time `now`, within what the provider sent."""
        if self.reported_ms is not None:
            played = float(self.reported_ms)
        elif self.first_sent is None:
            played = 0.0
        else:
            played = (now - self.first_sent) * 1000
        return math.floor(max(0.0, min(played, self.sent_ms, self.provider_ms)))

    def item_played_ms(self, played_ms: int) -> int:
        """How much of the current item was heard, when `played_ms` of the reply was."""
        return math.floor(max(0.0, min(played_ms - self.item_start_ms, self.item_ms)))

    def played_out_at(self) -> float | None:
        """Loop time at which everything sent has played (None: nothing was sent)."""
        return None if self.first_sent is None else self.first_sent + self.sent_ms / 1000


def heard_words(text: str, played_ms: float, audio_ms: float) -> str:
    """The first words of `text` in proportion to the audio played (all of it when the whole
    audio played)."""
    if audio_ms <= 0 or played_ms <= 0:
        return ""
    if played_ms >= audio_ms:
        return text
    words = text.split()
    return " ".join(words[: math.floor(len(words) * played_ms / audio_ms)])
