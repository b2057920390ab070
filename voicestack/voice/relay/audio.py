"""Audio between the client and the provider, and how much of a reply the listener has heard.

The provider hears and speaks the client's own audio when the protocol allows (8 kHz μ-law for
a phone, 24 kHz PCM; session_config.provider_audio): then every frame passes through as it is,
with no codec and no resampler. Otherwise (16 kHz PCM from a browser, say) both ways are
converted: μ-law by table, and rates by the relay's polyphase resampler (resample.py), which
holds no audio back, so a frame leaves the relay as soon as it arrives.

Reply audio is forwarded as it arrives, not paced: a relay adds no wait of its own, and the
client (or Twilio) buffers it. What has been heard is therefore what the client reports
(`played`, or Twilio's echoed marks); a client that never reports is taken to play audio as
it arrives, from the reply's first frame, up to what was sent. The transcript heard is cut in
proportion: the words of the reply's transcript, times the share of its audio played.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from voicestack.voice.realtime import codec
from voicestack.voice.realtime.wire import Start
from voicestack.voice.relay.session_config import ProviderAudio

if TYPE_CHECKING:
    from voicestack.voice.relay.resample import PolyphaseResampler

FRAME_MS = 20


class _Conversion:
    """Audio of one format and rate as another's, streaming (identity when they match)."""

    def __init__(self, source: Start | ProviderAudio, target: Start | ProviderAudio) -> None:
        self._decode = source.format == "mulaw"
        self._encode = target.format == "mulaw"
        self._identity = source.format == target.format and source.sample_rate == target.sample_rate
        self._rates = (source.sample_rate, target.sample_rate)
        self._resample = self._resampler()
        self._odd = b""

    def _resampler(self) -> PolyphaseResampler | None:
        source, target = self._rates
        if source == target:
            return None
        # Imported here: the resampler's numpy is loaded by the first conversation that needs it.
        from voicestack.voice.relay.resample import PolyphaseResampler

        return PolyphaseResampler(source, target)

    def __call__(self, data: bytes) -> bytes:
        """The next piece of audio converted (a PCM piece may split a sample: the byte waits)."""
        if self._decode:
            if self._identity:
                return data
            pcm = codec.mulaw_to_pcm16(data)
        else:
            data = self._odd + data
            cut = len(data) // 2 * 2
            pcm, self._odd = data[:cut], data[cut:]
            if self._identity:
                return pcm
        if self._resample is not None:
            pcm = self._resample(pcm)
        return codec.pcm16_to_mulaw(pcm) if self._encode else pcm

    def restart(self) -> None:
        """Forget the filter's history (a new audio item starts from silence)."""
        self._resample = self._resampler()
        self._odd = b""


class InboundAudio:
    """The client's frames as the provider hears them."""

    def __init__(self, start: Start, provider: ProviderAudio) -> None:
        self._convert = _Conversion(start, provider)

    def __call__(self, frame: bytes) -> bytes:
        """One frame in the provider's format (the frame itself when the formats match)."""
        return self._convert(frame)


class ReplyAudio:
    """One reply's audio on its way to the client: converted, cut in frames, and accounted."""

    def __init__(self, start: Start, provider: ProviderAudio) -> None:
        self._start = start
        self._convert = _Conversion(provider, start)
        self._provider_bytes_per_ms = provider.bytes_per_ms
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

    def convert(self, audio: bytes, last: bool = False) -> bytes:
        """Provider audio in the client's format and rate (as is when they match); after
        `last`, the end of an audio item, the next item starts the filter afresh."""
        self.provider_ms += len(audio) / self._provider_bytes_per_ms
        out = self._convert(audio)
        if last:
            self._convert.restart()
        return out

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
