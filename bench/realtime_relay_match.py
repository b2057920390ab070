"""Pairing each audio frame sent with where it came out on the other side of the relay.

The relay may convert audio on the way (16 kHz PCM to the provider's 24 kHz PCM, and back; a
phone's 8 kHz μ-law passes through), so frames cannot carry a tag through it; they are matched
by counting audio instead.
Both sides note, at each frame, the milliseconds of audio up to its end. A frame ending at `e`
ms has arrived with the first frame on the far side that brings the far side's count to `e`:
whatever a resampler holds back (it keeps some input until it has a block to filter) is
latency the relay adds, and is counted. Each reply's resampler is flushed when the reply's
audio ends, so the counts stay exactly in step from one reply to the next (a reply cut by
barge-in would put them out of step; the bench's calls let each reply play out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from voicestack.voice.realtime.wire import Start
from voicestack.voice.relay.audio import InboundAudio, ReplyAudio
from voicestack.voice.relay.session_config import provider_audio

EPSILON_MS = 0.5  # rounding of the counts: below one sample at 8 kHz is 0.125 ms


def provider_counts(
    stamps: Sequence[Sequence[int]], bytes_per_ms: float
) -> list[tuple[int, float]]:
    """The provider's (ns, bytes) stamps as (ns, ms of audio up to the end of each), for audio
    of `bytes_per_ms` (48: 24 kHz PCM; 8: μ-law)."""
    total, out = 0, []
    for ns, size in stamps:
        total += size
        out.append((ns, total / bytes_per_ms))
    return out


def delays_ms(
    sources: Sequence[tuple[int, float]],
    sinks: Sequence[tuple[int, float]],
    window: tuple[int, int],
) -> list[float]:
    """For each source frame sent within `window` (ns), ms until all its audio had reached the
    sink (frames whose audio never all arrived are left out)."""
    delays: list[float] = []
    at = 0
    for sent_ns, upto in sources:
        while at < len(sinks) and sinks[at][1] < upto - EPSILON_MS:
            at += 1
        if at == len(sinks):
            break
        if window[0] <= sent_ns <= window[1]:
            delays.append((sinks[at][0] - sent_ns) / 1e6)
    return delays


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile (nan for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def resampler_delays_ms(
    start: Start, frames: int, inbound: bool, flush_every: int = 0
) -> list[float]:
    """The relay's conversion alone (voicestack.voice.relay.audio, as the relay runs it for a
    client speaking `start`'s audio), inbound or outbound, fed one 20 ms frame every 20 ms with
    no other cost: how long each frame's audio waits in it. With `flush_every`, the outbound
    stream is a reply whose item ends after that many frames (the relay then starts the
    filter afresh)."""
    provider = provider_audio(start)
    source_bytes_per_ms = start.sample_rate * (1 if start.format == "mulaw" else 2) / 1000
    sink_bytes_per_ms = provider.bytes_per_ms
    if not inbound:
        source_bytes_per_ms, sink_bytes_per_ms = sink_bytes_per_ms, source_bytes_per_ms
    step = int(source_bytes_per_ms * 20)
    sources, sinks, out, now = [], [], 0.0, 0
    into_provider = InboundAudio(start, provider)
    reply = ReplyAudio(start, provider)
    for n in range(frames):
        now = n * 20_000_000
        sources.append((now, (n + 1) * 20.0))
        last = bool(flush_every) and (n + 1) % flush_every == 0
        frame = bytes(step) if start.format == "pcm16" or not inbound else b"\xff" * step
        converted = into_provider(frame) if inbound else reply.convert(frame, last=last)
        out += len(converted) / sink_bytes_per_ms
        sinks.append((now, out))
    return delays_ms(sources, sinks, (0, now))
