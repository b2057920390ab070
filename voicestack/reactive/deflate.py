"""Compressed feed streams (`Content-Encoding: deflate`) whose fan-out costs what a plain one does.

Every compressed subscriber of one thread belongs to that thread's Cohort: one raw-deflate
compressor whose output they all share. Each batch of events is compressed once and sync-flushed,
so a segment ends on a byte boundary with everything in it decodable, and the same segment goes to
every compressed subscriber, as the plain bytes go to the plain ones.

A subscriber's stream is the zlib header (RFC 1950); its own catch-up, compressed by a compressor
of its own and flushed (possibly empty); the cohort's segments from the batch after it joined;
and, when the stream ends gracefully, a final empty block and the Adler-32 of everything it was
sent. A newcomer never saw what the cohort compressed before it joined, so the cohort's next
segment must not refer back to it: the compressor does a full flush (forgetting its history)
before the first batch after any join. The Adler-32 is never computed per subscriber: the cohort
keeps a running one, and a subscriber's is derived from the cohort's at its join and at its end,
then combined with its catch-up's (`adler32_suffix`, `adler32_combine`).

A keep-alive is an empty stored block, which decodes to nothing and shifts no decoder's history.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from voicestack.reactive.wire import http_chunk

# A 2 KiB window and small hash tables: about 17 KiB per cohort. Measured on a 400-word reply
# at 65 tokens/s, wire bytes per text byte: 2.5 at wbits 10, 2.35 at 11, 2.26 at 12, 1.91 at
# 14 (72 KiB); the per-batch flush and chunk framing, not the window, set most of the cost.
WBITS = 11
MEM_LEVEL = 2
LEVEL = 6
# What a sync flush emits with nothing pending: an empty stored block, byte-aligned.
EMPTY_BLOCK = b"\x00\x00\x00\xff\xff"
# A final (BFINAL) fixed-code block with no symbols but its end: the end of the deflate data.
FINAL_BLOCK = b"\x03\x00"
_BASE = 65521  # Adler-32's modulus


def zlib_header(wbits: int = WBITS, level: int = LEVEL) -> bytes:
    """The two-byte zlib header (RFC 1950) of a stream with this window and level."""
    cmf = (wbits - 8) << 4 | 8
    flevel = 0 if level < 2 else 1 if level < 6 else 2 if level == 6 else 3
    flg = flevel << 6
    flg += 31 - (cmf << 8 | flg) % 31
    return bytes((cmf, flg))


def accepts_deflate(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value admits `deflate`: listed with q > 0, or unlisted with
    `*` at q > 0 (RFC 9110 §12.5.3). A malformed weight counts as 0."""
    deflate: float | None = None
    anything: float | None = None
    for item in accept_encoding.split(","):
        coding, *params = item.split(";")
        name = coding.strip().lower()
        weight = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0
        if name == "deflate":
            deflate = weight
        elif name == "*":
            anything = weight
    chosen = deflate if deflate is not None else anything
    return chosen is not None and 0 < chosen <= 1


@dataclass(frozen=True, slots=True)
class Mark:
    """A point in an uncompressed stream: the Adler-32 and length of everything before it."""

    adler: int = 1
    length: int = 0

    def after(self, data: bytes) -> Mark:
        """The point `data` further on."""
        return Mark(zlib.adler32(data, self.adler), self.length + len(data))


def adler32_suffix(whole: Mark, prefix: Mark) -> int:
    """The Adler-32 of the bytes from `prefix` to `whole`, a later point of the same stream."""
    m = (whole.length - prefix.length) % _BASE
    a_whole, b_whole = whole.adler & 0xFFFF, whole.adler >> 16
    a_prefix, b_prefix = prefix.adler & 0xFFFF, prefix.adler >> 16
    a = (a_whole - a_prefix + 1) % _BASE
    b = (b_whole - b_prefix - m * a_prefix + m) % _BASE
    return b << 16 | a


def adler32_combine(first: int, second: int, second_length: int) -> int:
    """The Adler-32 of A + B, from A's, B's and B's length (zlib's adler32_combine)."""
    m = second_length % _BASE
    a_first, b_first = first & 0xFFFF, first >> 16
    a_second, b_second = second & 0xFFFF, second >> 16
    a = (a_first + a_second - 1) % _BASE
    b = (b_first + b_second + m * a_first - m) % _BASE
    return b << 16 | a


def _compressor() -> zlib._Compress:
    return zlib.compressobj(LEVEL, zlib.DEFLATED, -WBITS, MEM_LEVEL)


@dataclass(frozen=True, slots=True)
class Segment:
    """One batch of events compressed by a cohort, shared by every compressed subscriber."""

    body: bytes
    frame: bytes  # `body` as one HTTP/1.1 chunk, for direct writes
    last_id: int  # the batch's last event id: the subscriber's cursor once it has the segment


@dataclass(frozen=True, slots=True)
class Opening:
    """A compressed subscriber's catch-up, compressed on its own and flushed."""

    body: bytes
    catch_up: Mark


def opening(catch_up: bytes) -> Opening:
    """`catch_up` compressed by a compressor of its own and flushed to a byte boundary, so that
    the cohort's segments can follow it (they never refer back into it)."""
    if not catch_up:
        return Opening(b"", Mark())
    compressor = _compressor()
    body = compressor.compress(catch_up) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return Opening(body, Mark().after(catch_up))


class Cohort:
    """The compressed subscribers of one thread: one compressor, its output shared by them all."""

    def __init__(self) -> None:
        self._compressor = _compressor()
        self.end = Mark()  # of everything compressed so far
        self._joined = False  # someone joined since the last segment

    def admit(self) -> Mark:
        """Let a subscriber take segments from the next one on; returns where it joins."""
        self._joined = True
        return self.end

    def segment(self, data: bytes, last_id: int) -> Segment:
        """`data` (one batch's events) compressed and sync-flushed, for every subscriber."""
        compressor = self._compressor
        if self._joined and self.end.length:
            # Forget the history a newcomer never got. After the last sync flush nothing is
            # pending, so this emits only an empty stored block, which no decoder needs.
            compressor.flush(zlib.Z_FULL_FLUSH)
        self._joined = False
        body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        self.end = self.end.after(data)
        return Segment(body, http_chunk(body), last_id)


class Deflated:
    """One compressed subscriber's place in its stream, enough to end the stream with the
    Adler-32 of all it was sent. The zlib header goes first, before anything else.

    A subscriber is given every segment of its cohort from its join until it is closed, so
    nothing is tracked per segment: what it was sent is the cohort's stream from `joined` to
    the cohort's end when it was closed, or when it was held if it is closed while held (what
    is held is never sent).
    """

    __slots__ = ("_unheld", "catch_up", "cohort", "joined", "sent")
    header = zlib_header()

    def __init__(self) -> None:
        self.catch_up = Mark()
        self.cohort: Cohort | None = None
        self.joined = Mark()
        self.sent: Mark | None = None  # the cohort's point the stream ends at, once closed
        self._unheld: Mark | None = None

    def join(self, opening: Opening, cohort: Cohort) -> None:
        """Record the subscriber's catch-up and join `cohort` after its latest segment."""
        self.catch_up = opening.catch_up
        self.cohort = cohort
        self.joined = cohort.admit()

    def hold(self) -> None:
        """The subscriber is held: segments from now on may never be sent."""
        self._unheld = self.cohort.end if self.cohort is not None else None

    def close(self, held: bool) -> None:
        """The subscriber is closed (`held`: while held): fix where its stream ends."""
        if held:
            self.sent = self._unheld
        elif self.cohort is not None:
            self.sent = self.cohort.end

    def trailer(self) -> bytes:
        """The end of the stream: a final empty block and the big-endian Adler-32 of everything
        the subscriber was sent, uncompressed (catch-up, then segments up to `sent`)."""
        adler = 1  # of nothing: closed before its catch-up went out
        if self.sent is not None:
            live = adler32_suffix(self.sent, self.joined)
            live_length = self.sent.length - self.joined.length
            adler = adler32_combine(self.catch_up.adler, live, live_length)
        return FINAL_BLOCK + adler.to_bytes(4, "big")
