"""Audio formats recognised from their first bytes, never from a file name or a claimed type."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """A container format: its short name, MIME type, and the file extension providers expect."""

    name: str
    content_type: str
    extension: str


WAV = AudioFormat("wav", "audio/wav", "wav")
WEBM = AudioFormat("webm", "audio/webm", "webm")
# Matroska is WebM's superset; transcription servers decode both with the same demuxer, so the
# upload keeps a .webm name while the stored type says what the bytes are.
MATROSKA = AudioFormat("matroska", "audio/x-matroska", "webm")
OGG = AudioFormat("ogg", "audio/ogg", "ogg")
MP3 = AudioFormat("mp3", "audio/mpeg", "mp3")
M4A = AudioFormat("m4a", "audio/mp4", "m4a")
MP4 = AudioFormat("mp4", "audio/mp4", "mp4")
FLAC = AudioFormat("flac", "audio/flac", "flac")

_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_EBML_HEAD_BYTES = 64  # the DocType sits in the EBML header, a few dozen bytes in
_M4A_BRANDS = (b"M4A ", b"M4B ", b"M4P ")


def _is_mp3_frame(data: bytes) -> bool:
    """An MPEG audio frame header: 11 sync bits, a real version, layer, bitrate and rate."""
    if len(data) < 4 or data[0] != 0xFF or data[1] & 0xE0 != 0xE0:
        return False
    version = (data[1] >> 3) & 0b11
    layer = (data[1] >> 1) & 0b11
    bitrate = data[2] >> 4
    rate = (data[2] >> 2) & 0b11
    # Layer 0 is reserved, and is what an AAC ADTS header has there: not MP3.
    return version != 0b01 and layer != 0 and bitrate not in (0, 15) and rate != 0b11


def _ebml_format(data: bytes) -> AudioFormat:
    head = data[:_EBML_HEAD_BYTES]
    return WEBM if b"webm" in head else MATROSKA


def detect_audio(data: bytes) -> AudioFormat | None:
    """The audio format of `data` from its magic bytes, or None when it is not audio we take.

    Recognised: WAV (RIFF/WAVE), WebM and Matroska (EBML), Ogg, MP3 (ID3 tag or frame sync),
    MP4/M4A (ftyp box) and FLAC.
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return WAV
    if data[:4] == _EBML_MAGIC:
        return _ebml_format(data)
    if data[:4] == b"OggS":
        return OGG
    if data[:4] == b"fLaC":
        return FLAC
    if data[4:8] == b"ftyp":
        return M4A if data[8:12] in _M4A_BRANDS else MP4
    if data[:3] == b"ID3" or _is_mp3_frame(data):
        return MP3
    return None


def format_named(name: str) -> AudioFormat | None:
    """The format a provider was asked for by name ("mp3", "wav", "flac", "opus")."""
    return {"mp3": MP3, "wav": WAV, "flac": FLAC, "opus": OGG}.get(name)
