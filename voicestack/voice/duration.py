"""How long a piece of audio plays, read from its container's own header, without decoding it.

WAV: data bytes / byte rate. FLAC: STREAMINFO's sample count. Ogg (Opus, Vorbis): the last page's
granule position. MP4/M4A: the `mvhd` box. MP3: the Xing/Info/VBRI frame count, otherwise the
first frame's bitrate (exact for constant bitrate). WebM/Matroska: the Segment Info's Duration,
or, for a live recording without one (a browser's MediaRecorder), the time of its last block.
None when the header does not say: the caller then falls back to the provider's figure.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from voicestack.voice.formats import AudioFormat

_OPUS_RATE = 48_000
_NO_GRANULE = 0xFFFF_FFFF_FFFF_FFFF


def audio_duration(data: bytes, fmt: AudioFormat) -> float | None:
    """Seconds of audio in `data` of format `fmt`, or None when the header does not say."""
    reader = _READERS.get(fmt.name)
    if reader is None:
        return None
    try:
        seconds = reader(data)
    except (IndexError, ValueError, struct.error, ZeroDivisionError):
        return None
    return round(seconds, 3) if seconds is not None and seconds >= 0 else None


def _wav(data: bytes) -> float | None:
    offset, byte_rate = 12, 0
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if chunk == b"fmt ":
            byte_rate = struct.unpack_from("<I", data, body + 8)[0]
        elif chunk == b"data":
            available = len(data) - body
            # Streamed WAVs leave the size at 0 or 0xFFFFFFFF: the data runs to the end.
            if size in (0, 0xFFFF_FFFF) or size > available:
                size = available
            return size / byte_rate if byte_rate else None
        offset = body + size + (size & 1)
    return None


def _flac(data: bytes) -> float | None:
    if data[4] & 0x7F != 0:  # the first metadata block must be STREAMINFO
        return None
    packed = int.from_bytes(data[18:26], "big")
    rate, samples = packed >> 44, packed & ((1 << 36) - 1)
    return samples / rate if rate and samples else None


def _ogg_first_packet(data: bytes) -> bytes:
    segments = data[26]
    start = 27 + segments
    return data[start : start + sum(data[27 : 27 + segments])]


def _ogg_last_granule(data: bytes, serial: bytes) -> int | None:
    end = len(data)
    while (page := data.rfind(b"OggS", 0, end)) >= 0:
        granule = struct.unpack_from("<Q", data, page + 6)[0]
        if data[page + 4] == 0 and data[page + 14 : page + 18] == serial and granule != _NO_GRANULE:
            return granule
        end = page
    return None


def _ogg(data: bytes) -> float | None:
    packet = _ogg_first_packet(data)
    if packet.startswith(b"OpusHead"):
        rate, skip = _OPUS_RATE, struct.unpack_from("<H", packet, 10)[0]
    elif packet.startswith(b"\x01vorbis"):
        rate, skip = struct.unpack_from("<I", packet, 12)[0], 0
    else:
        return None
    granule = _ogg_last_granule(data, data[14:18])
    return max(0, granule - skip) / rate if granule is not None and rate else None


def _mp4_boxes(data: bytes, start: int, end: int) -> dict[bytes, tuple[int, int]]:
    boxes: dict[bytes, tuple[int, int]] = {}
    offset = start
    while offset + 8 <= end:
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


def _mp4(data: bytes) -> float | None:
    moov = _mp4_boxes(data, 0, len(data)).get(b"moov")
    mvhd = _mp4_boxes(data, *moov).get(b"mvhd") if moov else None
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


def _mp3_start(data: bytes) -> int:
    """Where the audio frames begin: after an ID3v2 tag, at the first frame sync."""
    start = 0
    if data[:3] == b"ID3":
        size = sum((data[6 + i] & 0x7F) << (7 * (3 - i)) for i in range(4))
        start = 10 + size + (10 if data[5] & 0x10 else 0)
    while start + 1 < len(data) and not (data[start] == 0xFF and data[start + 1] & 0xE0 == 0xE0):
        start += 1
    return start


def _mp3(data: bytes) -> float | None:
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
    if data[xing : xing + 4] in (b"Xing", b"Info") and data[xing + 7] & 1:
        return struct.unpack_from(">I", data, xing + 8)[0] * per_frame / rate
    if data[start + 36 : start + 40] == b"VBRI":
        return struct.unpack_from(">I", data, start + 50)[0] * per_frame / rate
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


def _ebml_children(data: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """The children of the EBML element whose body spans [start, end), by id (first one wins)."""
    children: dict[int, tuple[int, int]] = {}
    offset = start
    while offset < end:
        element, id_len, _ = _vint(data, offset, keep_marker=True)
        size, size_len, unknown = _vint(data, offset + id_len, keep_marker=False)
        body = offset + id_len + size_len
        stop = end if unknown else min(end, body + size)
        children.setdefault(element, (body, stop))
        if unknown:
            break  # an element of unknown size (a live recording) runs to its parent's end
        offset = stop
    return children


def _last_block_ticks(data: bytes, start: int, end: int) -> int | None:
    """When the last block of a segment starts, in ticks, from a flat scan of its clusters.

    Clusters and block groups are entered and everything else skipped, so a cluster of unknown
    size (as a browser's MediaRecorder writes them) simply ends where the next one begins.
    """
    cluster, last = 0, None
    offset = start
    while offset < end:
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


def _webm(data: bytes) -> float | None:
    segment = _ebml_children(data, 0, len(data)).get(_EBML_SEGMENT)
    if segment is None:
        return None
    info = _ebml_children(data, *segment).get(_EBML_INFO)
    fields = _ebml_children(data, *info) if info else {}
    scale = 1_000_000
    if _EBML_TIMESCALE in fields:
        start, stop = fields[_EBML_TIMESCALE]
        scale = int.from_bytes(data[start:stop], "big")
    if _EBML_DURATION in fields:
        start, stop = fields[_EBML_DURATION]
        ticks = struct.unpack(">f" if stop - start == 4 else ">d", data[start:stop])[0]
    else:  # a live recording: the last block's time (short of that block's own length)
        ticks = _last_block_ticks(data, *segment)
    return ticks * scale / 1e9 if ticks is not None else None


_READERS: dict[str, Callable[[bytes], float | None]] = {
    "wav": _wav,
    "flac": _flac,
    "ogg": _ogg,
    "mp4": _mp4,
    "m4a": _mp4,
    "mp3": _mp3,
    "webm": _webm,
    "matroska": _webm,
}
