"""How many seconds an upload is counted as, from its header and the provider's figure, both
checked against what its bytes can physically hold.

A header is the uploader's word: a WAV claiming 1 byte per second, or a WebM Duration of a
billion seconds, would otherwise land in usage as recorded. The provider decoded the audio, so
when it gives a figure that the header contradicts, the provider's wins.
"""

from __future__ import annotations

import logging
import math

from voicestack.voice.duration import audio_duration
from voicestack.voice.formats import AudioFormat

log = logging.getLogger(__name__)

# The fewest bytes one second of audio takes in each container. Uncompressed WAV: GSM 6.10, its
# leanest codec in use, at 1,625 B/s. Compressed: below Opus's 6 kbit/s floor (750 B/s) and
# MP3's or AAC's 8 kbit/s (1,000 B/s), with room for long frames and silence.
_LEAST_BYTES_PER_SECOND = {"wav": 1_000}
_LEAST_COMPRESSED_BYTES_PER_SECOND = 250
# Providers round (a billed duration is whole seconds); within this they agree with the header.
_AGREE_S = 1.0
_AGREE_SHARE = 0.1


def most_seconds(size: int, fmt: AudioFormat) -> float:
    """The longest `size` bytes of `fmt` can play: no sane duration is longer."""
    floor = _LEAST_BYTES_PER_SECOND.get(fmt.name, _LEAST_COMPRESSED_BYTES_PER_SECOND)
    return size / floor


def recorded_seconds(data: bytes, fmt: AudioFormat, reported_s: float | None) -> float | None:
    """Seconds of audio to count for an upload, or None when nothing credible says.

    The header's figure when it is possible and agrees with the provider's (or the provider
    gives none); otherwise the provider's, when possible. Bounded CPU (audio_duration), but
    call it off the event loop: a 25 MiB upload is still scanned.
    """
    limit = most_seconds(len(data), fmt)
    header = audio_duration(data, fmt)
    if header is not None and header > limit:
        log.info("ignored a %s header claiming %g s in %d bytes", fmt.name, header, len(data))
        header = None
    reported = reported_s
    if reported is not None and not (math.isfinite(reported) and 0 <= reported <= limit):
        log.info("ignored a provider duration of %g s for %d bytes", reported, len(data))
        reported = None
    if reported is None:
        return header
    if header is not None and abs(header - reported) <= max(_AGREE_S, _AGREE_SHARE * reported):
        return header  # exact, where the provider's may be rounded
    return round(reported, 3)
