"""Deflated feed outboxes without a server: one cohort compressor shared by subscribers that join
at different moments, each of whom decodes exactly what it was sent, and a zlib stream that ends
with the right Adler-32 without ever computing one per subscriber."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicestack.reactive.channel import FeedChannel
from voicestack.reactive.deflate import (
    EMPTY_BLOCK,
    Cohort,
    Mark,
    accepts_deflate,
    adler32_combine,
    adler32_suffix,
    opening,
    zlib_header,
)

pytestmark = pytest.mark.anyio

# Big enough that lengths pass Adler-32's modulus, 65521.
LONG = st.binary(max_size=300).map(lambda b: b * 300) | st.binary(max_size=300)


@given(LONG, LONG)
def test_the_adler32_of_a_stream_suffix_is_derived_from_the_two_running_ones(
    prefix: bytes, suffix: bytes
) -> None:
    before = Mark().after(prefix)
    after = before.after(suffix)
    assert after == Mark(zlib.adler32(prefix + suffix), len(prefix) + len(suffix))
    assert adler32_suffix(after, before) == zlib.adler32(suffix)


@given(LONG, LONG)
def test_two_adler32s_combine_into_that_of_the_joined_bytes(first: bytes, second: bytes) -> None:
    combined = adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
    assert combined == zlib.adler32(first + second)


@pytest.mark.parametrize("wbits", range(9, 16))
@pytest.mark.parametrize("level", [1, 4, 6, 9])
def test_the_zlib_header_is_the_one_zlib_writes(wbits: int, level: int) -> None:
    compressor = zlib.compressobj(level, zlib.DEFLATED, wbits)
    assert zlib_header(wbits, level) == compressor.flush()[:2]


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip, deflate, br", True),  # browsers' EventSource
        ("gzip, deflate", True),  # httpx
        ("DEFLATE;Q=0.5", True),
        ("gzip;q=1.0, deflate ; q=0.001", True),
        ("*", True),
        ("gzip, *;q=0.1", True),
        ("", False),
        ("identity", False),
        ("gzip, br", False),
        ("deflate;q=0", False),
        ("deflate; q=0.000", False),
        ("deflate;q=0, *", False),  # named, refused: `*` does not bring it back
        ("*;q=0", False),
        ("deflate;q=x", False),
        ("deflate;q=2", False),
        ("deflated", False),
    ],
)
def test_deflate_is_accepted_only_when_listed_or_starred_with_a_positive_weight(
    header: str, accepted: bool
) -> None:
    assert accepts_deflate(header) is accepted


async def drain(outbox: FeedChannel) -> bytes:
    """Everything the closed outbox still hands out, up to its end."""
    chunks = []
    while (chunk := await outbox.next_chunk()) is not None:
        chunks.append(chunk)
    return b"".join(chunks)


def event(n: int) -> bytes:
    # Alike enough that a compressor refers back to earlier events whenever it may.
    return b'id: %d\nevent: delta\ndata: {"messageId":"msg_1","text":"word %d ","seq":%d}\n\n' % (
        n,
        n % 3,
        n,
    )


def join(cohort: Cohort, catch_up: bytes, cursor: int) -> FeedChannel:
    outbox = FeedChannel(deflate=True)
    outbox.open_deflated(opening(catch_up), cursor, cohort)
    return outbox


def decoded(wire: bytes) -> tuple[bytes, bool]:
    """The stream decoded by zlib, which checks the Adler-32 at its end, and whether it ended."""
    decoder = zlib.decompressobj()
    data = decoder.decompress(wire)
    assert decoder.unused_data == b""
    return data, decoder.eof


async def test_subscribers_joining_at_different_batches_each_decode_what_they_were_sent() -> None:
    cohort = Cohort()
    early = join(cohort, b"", 0)
    sent_early = b""
    # Not the bytes the cohort compressed before: a back-reference into those would decode to
    # something else for this subscriber.
    sent_late = catch_up = b'event: ready\nid: 3\ndata: {"cursor":3}\n\n'
    late: FeedChannel | None = None
    for n in range(1, 9):
        if n == 4:
            late = join(cohort, catch_up, 3)
        segment = cohort.segment(event(n), n)
        for outbox in (early, late):
            if outbox is not None:
                outbox.queue_segment(segment)
        sent_early += event(n)
        if late is not None:
            sent_late += event(n)
    assert late is not None
    assert late.cursor == 8
    wire_early = await early.next_chunk() or b""
    early.ping()
    assert await early.next_chunk() == EMPTY_BLOCK
    early.close()
    wire_early += EMPTY_BLOCK + await drain(early)
    late.close()
    wire_late = await drain(late)
    assert wire_late.startswith(zlib_header())
    assert decoded(wire_early) == (sent_early, True)
    assert decoded(wire_late) == (sent_late, True)


async def test_a_keepalive_is_an_empty_block_that_decodes_to_nothing() -> None:
    cohort = Cohort()
    outbox = join(cohort, b"caught up\n\n", 0)
    assert await outbox.next_chunk() == zlib_header() + opening(b"caught up\n\n").body
    outbox.ping()
    assert await outbox.next_chunk() == EMPTY_BLOCK
    outbox.queue_segment(cohort.segment(event(1), 1))
    outbox.ping()
    outbox.close()
    wire = zlib_header() + opening(b"caught up\n\n").body + EMPTY_BLOCK + await drain(outbox)
    assert decoded(wire) == (b"caught up\n\n" + event(1), True)


async def test_segments_held_and_then_dropped_are_left_out_of_the_checksum() -> None:
    cohort = Cohort()
    outbox = join(cohort, event(0), 0)
    outbox.queue_segment(cohort.segment(event(1), 1))
    outbox.hold()
    outbox.queue_segment(cohort.segment(event(2), 2))
    outbox.resume()
    outbox.hold()
    outbox.queue_segment(cohort.segment(event(3), 3))
    outbox.close()  # what was held is never sent
    assert decoded(await drain(outbox)) == (event(0) + event(1) + event(2), True)


async def test_a_stream_closed_before_its_opening_was_released_is_an_empty_zlib_stream() -> None:
    cohort = Cohort()
    outbox = FeedChannel(deflate=True)
    outbox.hold()
    outbox.open_deflated(opening(event(0)), 0, cohort)
    outbox.close()
    assert decoded(await drain(outbox)) == (b"", True)


async def test_a_subscriber_cut_for_falling_behind_gets_no_end_of_stream() -> None:
    cohort = Cohort()
    outbox = FeedChannel(max_buffer_bytes=200, deflate=True)
    outbox.open_deflated(opening(b""), 0, cohort)
    assert await outbox.next_chunk() == zlib_header()
    for n in range(1, 100):
        outbox.queue_segment(cohort.segment(bytes(range(256)) * n, n))
    assert outbox.closed
    assert await outbox.next_chunk() is None  # no final block: the client must reconnect


async def test_a_plain_feed_is_untouched() -> None:
    outbox = FeedChannel()
    assert outbox.content_encoding is None
    outbox.ping()
    assert await outbox.next_chunk() == b": ping\n\n"
    outbox.append(1, event(1))
    outbox.close()
    assert await drain(outbox) == event(1)
