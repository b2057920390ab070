"""Audio formats are told from their bytes, and durations read from their headers, on real speech
that espeak-ng recorded and sox or ffmpeg converted."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.support.voice import CONVERSIONS, FFMPEG, SOX, Recordings, requires_espeak
from voicestack.voice.duration import audio_duration
from voicestack.voice.formats import detect_audio

pytestmark = requires_espeak

FORMAT_NAMES = {
    "wav": ("wav", "audio/wav", "wav"),
    "flac": ("flac", "audio/flac", "flac"),
    "ogg": ("ogg", "audio/ogg", "ogg"),
    "opus": ("ogg", "audio/ogg", "ogg"),
    "mp3": ("mp3", "audio/mpeg", "mp3"),
    "webm": ("webm", "audio/webm", "webm"),
    "m4a": ("m4a", "audio/mp4", "m4a"),
}


def probed_seconds(path: Path, maker: str) -> float:
    """What sox (for the files sox can read) or ffprobe says the file lasts."""
    if maker in ("", "sox"):
        if SOX is None:
            pytest.skip("sox is not installed")
        out = subprocess.run([SOX, "--i", "-D", str(path)], check=True, capture_output=True)
        return float(out.stdout)
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.skip("ffprobe (ffmpeg) is not installed")
    out = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        check=True,
        capture_output=True,
    )
    return float(json.loads(out.stdout)["format"]["duration"])


@pytest.mark.parametrize("fmt", sorted(CONVERSIONS))
def test_each_format_is_recognised_from_its_bytes(recordings: Recordings, fmt: str) -> None:
    data = recordings.audio(fmt)

    found = detect_audio(data)

    assert found is not None
    assert (found.name, found.content_type, found.extension) == FORMAT_NAMES[fmt]


@pytest.mark.parametrize("fmt", sorted(CONVERSIONS))
def test_the_duration_comes_from_the_header(recordings: Recordings, fmt: str) -> None:
    data = recordings.audio(fmt)
    found = detect_audio(data)
    assert found is not None

    seconds = audio_duration(data, found)

    # ffprobe counts Opus pre-skip samples as audio; the header's granule does not.
    maker, name, _ = CONVERSIONS[fmt]
    expected = probed_seconds(recordings.directory / name, maker)
    assert seconds is not None
    assert seconds == pytest.approx(expected, abs=0.01)


def test_a_live_webm_recording_gets_its_duration_from_its_blocks(recordings: Recordings) -> None:
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    source = recordings.wav_path()
    # Written to a pipe, as a browser's MediaRecorder streams it: no Duration element.
    live = subprocess.run(
        [FFMPEG, "-loglevel", "error", "-i", str(source), "-c:a", "libopus", "-f", "webm", "-"],
        check=True,
        capture_output=True,
    ).stdout
    found = detect_audio(live)
    assert found is not None
    assert found.name == "webm"
    assert b"\x44\x89" not in live[:200]  # no Duration in the Segment Info

    # The last block starts one 20 ms Opus frame before the end.
    assert audio_duration(live, found) == pytest.approx(
        audio_duration(recordings.audio("wav"), detect_audio(recordings.audio("wav"))),  # type: ignore[arg-type]
        abs=0.03,
    )


def ebml(element: bytes, body: bytes, *, unknown_size: bool = False) -> bytes:
    """One EBML element; sizes are written as 8-byte integers."""
    size = (1 << 56) - 1 if unknown_size else len(body)
    return element + (size | (1 << 56)).to_bytes(8, "big") + body


def test_clusters_of_unknown_size_are_scanned_to_the_last_block() -> None:
    def cluster(timecode: int, *relative: int) -> bytes:
        blocks = b"".join(
            ebml(b"\xa3", b"\x81" + r.to_bytes(2, "big", signed=True) + b"\x80" + b"op")
            for r in relative
        )
        return ebml(
            b"\x1f\x43\xb6\x75",
            ebml(b"\xe7", timecode.to_bytes(2, "big")) + blocks,
            unknown_size=True,
        )

    header = ebml(b"\x1a\x45\xdf\xa3", ebml(b"\x42\x82", b"webm"))
    info = ebml(b"\x15\x49\xa9\x66", ebml(b"\x2a\xd7\xb1", (1_000_000).to_bytes(4, "big")))
    body = info + cluster(0, 0, 20, 40) + cluster(1000, -20, 480, 500)
    data = header + ebml(b"\x18\x53\x80\x67", body, unknown_size=True)

    found = detect_audio(data)
    assert found is not None
    assert audio_duration(data, found) == 1.5


def test_a_streamed_wav_header_takes_the_data_to_the_end(recordings: Recordings) -> None:
    data = bytearray(recordings.audio("wav"))
    exact = audio_duration(bytes(data), detect_audio(bytes(data)))  # type: ignore[arg-type]
    data_at = data.find(b"data")
    struct.pack_into("<I", data, data_at + 4, 0xFFFF_FFFF)  # as a recorder writing to a pipe

    assert audio_duration(bytes(data), detect_audio(bytes(data))) == exact  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is plain text and not audio at all",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b"%PDF-1.7\n",
        b"RIFF\x24\x00\x00\x00AVI LIST",
        b"\xff\xf1\x50\x80\x02\x1f\xfc",  # AAC ADTS: frame sync, but layer bits 00
        b"\xff\xfb\xf0\x00",  # MPEG frame sync with the "bad" bitrate index 15
    ],
    ids=["empty", "text", "png", "pdf", "avi", "adts", "bad-mp3-frame"],
)
def test_bytes_that_are_not_audio_are_refused(data: bytes) -> None:
    assert detect_audio(data) is None
