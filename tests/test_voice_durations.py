"""Durations that cannot be trusted are not: the container scan is bounded, a WAV is timed by
its real sample parameters, and a header is checked against the provider and the byte count."""

from __future__ import annotations

import struct

import pytest

from tests.support.voice import Recordings, requires_espeak, wav_seconds
from voicestack.voice.duration import SCAN_STEPS, audio_duration
from voicestack.voice.formats import WAV, WEBM
from voicestack.voice.recorded import most_seconds, recorded_seconds


def ebml(element: bytes, body: bytes, *, unknown_size: bool = False) -> bytes:
    """One EBML element; sizes are written as 8-byte integers."""
    size = (1 << 56) - 1 if unknown_size else len(body)
    return element + (size | (1 << 56)).to_bytes(8, "big") + body


def live_webm(blocks: int, duration_s: float | None = None) -> bytes:
    """A WebM as MediaRecorder writes it: one cluster of unknown size, a block every 1 ms;
    with `duration_s`, a Segment Info that claims that Duration."""
    info = ebml(b"\x2a\xd7\xb1", (1_000_000).to_bytes(4, "big"))
    if duration_s is not None:
        info += ebml(b"\x44\x89", struct.pack(">d", duration_s * 1000))
    body = b"".join(
        ebml(b"\xa3", b"\x81" + i.to_bytes(2, "big") + b"\x80" + b"op") for i in range(blocks)
    )
    cluster = ebml(b"\x1f\x43\xb6\x75", ebml(b"\xe7", b"\x00") + body, unknown_size=True)
    segment = ebml(b"\x15\x49\xa9\x66", info) + cluster
    header = ebml(b"\x1a\x45\xdf\xa3", ebml(b"\x42\x82", b"webm"))
    return header + ebml(b"\x18\x53\x80\x67", segment, unknown_size=True)


def test_a_live_webm_within_the_scan_limit_is_timed_by_its_last_block() -> None:
    blocks = SCAN_STEPS - 100

    assert audio_duration(live_webm(blocks), WEBM) == (blocks - 1) / 1000


def test_a_webm_that_needs_more_steps_than_the_limit_has_no_duration() -> None:
    assert audio_duration(live_webm(SCAN_STEPS), WEBM) is None


def test_the_attack_shape_of_millions_of_empty_blocks_is_not_walked() -> None:
    empty_blocks = b"\xa3\x80" * 2_000_000  # 4 MB: the scan gives up after SCAN_STEPS of them
    cluster = ebml(b"\x1f\x43\xb6\x75", ebml(b"\xe7", b"\x00") + empty_blocks, unknown_size=True)
    header = ebml(b"\x1a\x45\xdf\xa3", ebml(b"\x42\x82", b"webm"))

    assert audio_duration(header + ebml(b"\x18\x53\x80\x67", cluster), WEBM) is None


@requires_espeak
def test_a_wav_claiming_one_byte_a_second_is_timed_by_its_samples(
    recordings: Recordings,
) -> None:
    data = bytearray(recordings.audio("wav"))
    fmt_at = data.find(b"fmt ")
    struct.pack_into("<I", data, fmt_at + 16, 1)  # byte_rate

    assert audio_duration(bytes(data), WAV) == wav_seconds(recordings.audio("wav"))


@requires_espeak
def test_a_wav_with_an_impossible_sample_rate_has_no_duration(recordings: Recordings) -> None:
    data = bytearray(recordings.audio("wav"))
    fmt_at = data.find(b"fmt ")
    struct.pack_into("<II", data, fmt_at + 12, 1, 2)  # sample rate 1 Hz, 2 bytes a second

    assert audio_duration(bytes(data), WAV) is None


def test_a_header_duration_longer_than_the_bytes_can_hold_is_not_believed() -> None:
    data = live_webm(10, duration_s=1e9)
    assert most_seconds(len(data), WEBM) < 1e9

    assert (recorded_seconds(data, WEBM, None), recorded_seconds(data, WEBM, 0.5)) == (None, 0.5)


@pytest.mark.parametrize(
    ("reported", "counted"),
    [(None, 0.199), (0.0, 0.199), (1.0, 0.199), (2.5, 2.5), (float("nan"), 0.199), (1e9, 0.199)],
    ids=["none", "rounded-down", "rounded-up", "disagrees", "nan", "impossible"],
)
def test_the_header_is_kept_unless_the_provider_heard_otherwise(
    reported: float | None, counted: float
) -> None:
    data = live_webm(200)  # its last block starts at 0.199 s

    assert recorded_seconds(data, WEBM, reported) == counted
