"""How long a piece of audio plays, read from its container's own header, without decoding it.

WAV: data bytes / byte rate. FLAC: STREAMINFO's sample count. Ogg (Opus, Vorbis): the last page's
granule position. MP4/M4A: the `mvhd` box. MP3: the Xing/Info/VBRI frame count, otherwise the
first frame's bitrate (exact for constant bitrate). WebM/Matroska: the Segment Info's Duration,
or, for a live recording without one (a browser's MediaRecorder), the time of its last block.
None when the header does not say: the caller then falls back to the provider's figure.

Every reader is bounded: it visits at most SCAN_STEPS elements (chunks, boxes, pages, EBML
elements) and gives up (None) beyond that, and byte searches run in C. A 24 MiB WebM of 12 M
empty blocks once cost a minute of CPU to walk; now no upload costs more than SCAN_STEPS steps.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

from voicestack.voice.formats import AudioFormat

_OPUS_RATE = 48_000
_NO_GRANULE = 0xFFFF_FFFF_FFFF_FFFF
# About 0.1 s of CPU in the slowest reader (EBML, ~4 µs a step). A real header takes a few
# steps; a live WebM's last cluster at most ~1,650 (32.767 s of 20 ms Opus blocks).
SCAN_STEPS = 20_000
# PCM-like WAV codes (PCM, IEEE float, A-law, mu-law, extensible) whose bytes per second follow
# from the sample rate and block size; other codes (ADPCM, GSM) only state a byte rate.
_WAV_PCM = frozenset({1, 3, 6, 7, 0xFFFE})
_WAV_RATES = range(8_000, 768_001)  # below 8 kHz is no speech recording; above is no audio
_WAV_LEAST_BYTE_RATE = 1_000  # GSM 6.10, the leanest WAV codec in use, takes 1,625 B/s


class ScanLimit(ValueError):
    """A container needed more than SCAN_STEPS steps to read: its duration stays unknown."""


class _Steps:
    """The steps a reader may still take; each element visited costs one."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise ScanLimit(f"more than {SCAN_STEPS} elements")


def audio_duration(data: bytes, fmt: AudioFormat) -> float | None:
    """Seconds of audio in `data` of format `fmt`, or None when the header does not say.

    Takes at most SCAN_STEPS steps whatever the bytes; None when that is not enough.
    """
    reader = _READERS.get(fmt.name)
    if reader is None:
        return None
    try:
        seconds = reader(data, _Steps(SCAN_STEPS))
    except (IndexError, ValueError, struct.error, ZeroDivisionError, OverflowError):
        return None
    return round(seconds, 3) if seconds is not None and 0 <= seconds < float("inf") else None


def _wav_bytes_per_second(data: bytes, body: int) -> int | None:
    """Bytes per second from a `fmt ` chunk's real parameters, not its claimed byte rate."""
    fmt: tuple[int, int, int, int, int] = struct.unpack_from("<HHIIH", data, body)
    code, channels, rate, byte_rate, block = fmt
    if rate not in _WAV_RATES or not 1 <= channels <= 64:
        return None
    if code in _WAV_PCM:
        bits = struct.unpack_from("<H", data, body + 14)[0]
        # A block is one sample of every channel; a header that says otherwise lies somewhere.
        if bits == 0 or block != channels * -(-bits // 8):
            return None
        return rate * block
    return byte_rate if byte_rate >= _WAV_LEAST_BYTE_RATE else None


def _wav(data: bytes, steps: _Steps) -> float | None:
    offset, per_second = 12, None
    while offset + 8 <= len(data):
        steps.take()
        chunk, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if chunk == b"fmt ":
            per_second = _wav_bytes_per_second(data, body)
        elif chunk == b"data":
            available = len(data) - body
            # Streamed WAVs leave the size at 0 or 0xFFFFFFFF: the data runs to the end.
            if size in (0, 0xFFFF_FFFF) or size > available:
                size = available
            return size / per_second if per_second else None
        offset = body + size + (size & 1)
    return None


def _flac(data: bytes, _steps: _Steps) -> float | None:
    if data[4] & 0x7F != 0:  # the first metadata block must be STREAMINFO
        return None
    packed = int.from_bytes(data[18:26], "big")
    rate, samples = packed >> 44, packed & ((1 << 36) - 1)
    return samples / rate if rate and samples else None


def _ogg_first_packet(data: bytes) -> bytes:
    segments = data[26]
    start = 27 + segments
    return data[start : start + sum(data[27 : 27 + segments])]


def _ogg_last_granule(data: bytes, serial: bytes, steps: _Steps) -> int | None:
    end = len(data)
    while (page := data.rfind(b"OggS", 0, end)) >= 0:
        steps.take()
        granule: int = struct.unpack_from("<Q", data, page + 6)[0]
        if data[page + 4] == 0 and data[page + 14 : page + 18] == serial and granule != _NO_GRANULE:
            return granule
        end = page
    return None


def _ogg(data: bytes, steps: _Steps) -> float | None:
    packet = _ogg_first_packet(data)
    if packet.startswith(b"OpusHead"):
        rate, skip = _OPUS_RATE, struct.unpack_from("<H", packet, 10)[0]
    elif packet.startswith(b"\x01vorbis"):
        rate, skip = struct.unpack_from("<I", packet, 12)[0], 0
    else:
        return None
    granule = _ogg_last_granule(data, data[14:18], steps)
    return max(0, granule - skip) / rate if granule is not None and rate else None


def _mp4_boxes(data: bytes, start: int, end: int, steps: _Steps) -> dict[bytes, tuple[int, int]]:
    boxes: dict[bytes, tuple[int, int]] = {}
    offset = start
    while offset + 8 <= end:
        steps.take()
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, offset + 8)[0], 16
        elif size == 0:
            size = end - offset
        if size < header:
            break
        boxes.setdefault(kind, (offset + header, min(end, offset + size)))
        offset += size
    return boxes


def _mp4(data: bytes, steps: _Steps) -> float | None:
    moov = _mp4_boxes(data, 0, len(data), steps).get(b"moov")
    mvhd = _mp4_boxes(data, *moov, steps).get(b"mvhd") if moov else None
    if mvhd is None:
        return None
    body = mvhd[0]
    if data[body] == 1:
        scale, length = struct.unpack_from(">IQ", data, body + 20)
    else:
        scale, length = struct.unpack_from(">II", data, body + 12)
    return length / scale if scale else None


_MP3_KBPS = {
    (1, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (1, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (1, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_KBPS[(2, 3)] = _MP3_KBPS[(2, 2)]
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_MP3_SYNC = re.compile(rb"\xff[\xe0-\xff]")


def _mp3_start(data: bytes) -> int:
    """Where the audio frames begin: after an ID3v2 tag, at the first frame sync."""
    start = 0
    if data[:3] == b"ID3":
        size = sum((data[6 + i] & 0x7F) << (7 * (3 - i)) for i in range(4))
        start = 10 + size + (10 if data[5] & 0x10 else 0)
    sync = _MP3_SYNC.search(data, start)  # in C: megabytes of padding cost no Python steps
    return sync.start() if sync else len(data)


def _mp3(data: bytes, _steps: _Steps) -> float | None:
    start = _mp3_start(data)
    b1, b2, b3 = data[start + 1], data[start + 2], data[start + 3]
    version_bits, layer = (b1 >> 3) & 0b11, 4 - ((b1 >> 1) & 0b11)
    version = 1 if version_bits == 3 else 2
    kbps = _MP3_KBPS[(version, layer)][b2 >> 4]
    rate = _MP3_RATES[version_bits][(b2 >> 2) & 0b11]
    per_frame = 384 if layer == 1 else 1152 if layer == 2 or version == 1 else 576
    mono = (b3 >> 6) == 0b11
    side = (17 if mono else 32) if version == 1 else (9 if mono else 17)
    xing = start + 4 + side
    frames: int
    if data[xing : xing + 4] in (b"Xing", b"Info") and data[xing + 7] & 1:
        frames = struct.unpack_from(">I", data, xing + 8)[0]
        return frames * per_frame / rate
    if data[start + 36 : start + 40] == b"VBRI":
        frames = struct.unpack_from(">I", data, start + 50)[0]
        return frames * per_frame / rate
    tail = 128 if data[-128:-125] == b"TAG" else 0  # an ID3v1 tag at the end
    return (len(data) - start - tail) * 8 / (kbps * 1000) if kbps else None


_EBML_SEGMENT, _EBML_INFO = 0x18538067, 0x1549A966
_EBML_TIMESCALE, _EBML_DURATION = 0x2AD7B1, 0x4489
_EBML_CLUSTER, _EBML_TIMECODE = 0x1F43B675, 0xE7
_EBML_BLOCK_GROUP, _EBML_BLOCK, _EBML_SIMPLE_BLOCK = 0xA0, 0xA1, 0xA3


def _vint(data: bytes, offset: int, keep_marker: bool) -> tuple[int, int, bool]:
    """An EBML variable-length integer: (value, its length, whether it means 'unknown')."""
    first = data[offset]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        raise ValueError("invalid EBML integer")
    value = int.from_bytes(data[offset : offset + length], "big")
    if keep_marker:
        return value, length, False
    value &= (1 << (7 * length)) - 1
    return value, length, value == (1 << (7 * length)) - 1


def _ebml_children(
    data: bytes, start: int, end: int, steps: _Steps, stop_at: int | None = None
) -> dict[int, tuple[int, int]]:
    """The children of the EBML element whose body spans [start, end), by id (first one wins),
    up to the first `stop_at` child."""
    children: dict[int, tuple[int, int]] = {}
    offset = start
    while offset < end:
        steps.take()
        element, id_len, _ = _vint(data, offset, keep_marker=True)
        if element == stop_at:
            break
        size, size_len, unknown = _vint(data, offset + id_len, keep_marker=False)
        body = offset + id_len + size_len
        stop = end if unknown else min(end, body + size)
        children.setdefault(element, (body, stop))
        if unknown:
            break  # an element of unknown size (a live recording) runs to its parent's end
        offset = stop
    return children


_CLUSTER_ID = _EBML_CLUSTER.to_bytes(4, "big")
_CLUSTER_CANDIDATES = 64  # the ID's bytes may also occur inside audio: try this many


def _last_cluster(data: bytes, start: int, end: int, steps: _Steps) -> int | None:
    """Where the segment's last cluster begins: found from the end, in C, and checked by its
    first child being a cluster Timecode, so only the last cluster's blocks need walking."""
    stop = end
    for _ in range(_CLUSTER_CANDIDATES):
        steps.take()
        at = data.rfind(_CLUSTER_ID, start, stop)
        if at < 0:
            return None
        try:
            size_len = _vint(data, at + 4, keep_marker=False)[1]
            child, id_len, _ = _vint(data, at + 4 + size_len, keep_marker=True)
            length, _, unknown = _vint(data, at + 4 + size_len + id_len, keep_marker=False)
            if child == _EBML_TIMECODE and not unknown and 1 <= length <= 8:
                return at
        except (IndexError, ValueError):
            pass
        stop = at
    return None


def _last_block_ticks(data: bytes, start: int, end: int, steps: _Steps) -> int | None:
    """When the last block of a segment starts, in ticks, from a flat scan of its last cluster.

    Clusters and block groups are entered and everything else skipped, so a cluster of unknown
    size (as a browser's MediaRecorder writes them) simply ends where the next one begins.
    """
    cluster, last = 0, None
    offset = _last_cluster(data, start, end, steps)
    if offset is None:
        return None
    while offset < end:
        steps.take()
        element, id_len, _ = _vint(data, offset, keep_marker=True)
        size, size_len, unknown = _vint(data, offset + id_len, keep_marker=False)
        body = offset + id_len + size_len
        if element in (_EBML_CLUSTER, _EBML_BLOCK_GROUP):
            offset = body
            continue
        if unknown or body + size > end:
            break  # cannot be skipped, or cut off: what was seen so far is the answer
        if element == _EBML_TIMECODE:
            cluster = int.from_bytes(data[body : body + size], "big")
        elif element in (_EBML_SIMPLE_BLOCK, _EBML_BLOCK):
            track_len = _vint(data, body, keep_marker=False)[1]
            at = cluster + struct.unpack_from(">h", data, body + track_len)[0]
            last = at if last is None else max(last, at)
        offset = body + size
    return last


def _webm(data: bytes, steps: _Steps) -> float | None:
    segment = _ebml_children(data, 0, len(data), steps).get(_EBML_SEGMENT)
    if segment is None:
        return None
    # The Segment Info comes before the clusters; past the first cluster there is only audio.
    info = _ebml_children(data, *segment, steps, stop_at=_EBML_CLUSTER).get(_EBML_INFO)
    fields = _ebml_children(data, *info, steps) if info else {}
    scale = 1_000_000
    if _EBML_TIMESCALE in fields:
        start, stop = fields[_EBML_TIMESCALE]
        scale = int.from_bytes(data[start:stop], "big")
    if _EBML_DURATION in fields:
        start, stop = fields[_EBML_DURATION]
        ticks = struct.unpack(">f" if stop - start == 4 else ">d", data[start:stop])[0]
    else:  # a live recording: the last block's time (short of that block's own length)
        ticks = _last_block_ticks(data, *segment, steps)
    return ticks * scale / 1e9 if ticks is not None else None


_READERS: dict[str, Callable[[bytes, _Steps], float | None]] = {
    "wav": _wav,
    "flac": _flac,
    "ogg": _ogg,
    "mp4": _mp4,
    "m4a": _mp4,
    "mp3": _mp3,
    "webm": _webm,
    "matroska": _webm,
}
