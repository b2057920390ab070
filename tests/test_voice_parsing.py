"""The small parsers behind voice: streamed multipart, byte ranges, and sentences to speak."""

from __future__ import annotations

import pytest

from voicestack.http.ranges import RangeNotSatisfiable, parse_range
from voicestack.voice.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_of,
)
from voicestack.voice.sentences import SentenceSplitter, speakable

BOUNDARY = b"----formboundary7MA4YWxk"
AUDIO = bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n" + b"\r\n------formboundary7MA4YW"
BODY = (
    b"preamble to ignore\r\n"
    b"------formboundary7MA4YWxk\r\n"
    b'Content-Disposition: form-data; name="threadId"\r\n\r\n'
    b"thr_123\r\n"
    b"------formboundary7MA4YWxk\r\n"
    b'Content-Disposition: form-data; name="audio"; filename="clip.webm"\r\n'
    b"Content-Type: audio/webm\r\n\r\n" + AUDIO + b"\r\n"
    b"------formboundary7MA4YWxk--\r\n"
    b"epilogue to ignore"
)


def parse(body: bytes, step: int) -> list[object]:
    """Feed `body` in pieces of `step` bytes; merge consecutive data events."""
    parser = MultipartParser(BOUNDARY)
    events: list[object] = []
    for start in range(0, len(body), step):
        for event in parser.feed(body[start : start + step]):
            if isinstance(event, PartData) and events and isinstance(events[-1], PartData):
                events[-1] = PartData(events[-1].data + event.data)
            else:
                events.append(event)
    parser.close()
    return events


@pytest.mark.parametrize("step", [1, 2, 3, 7, 30, 31, 64, 1000, len(BODY)])
def test_a_form_parses_the_same_however_it_is_cut(step: int) -> None:
    assert parse(BODY, step) == [
        PartStart("threadId", None, None),
        PartData(b"thr_123"),
        PartEnd(),
        PartStart("audio", "clip.webm", "audio/webm"),
        PartData(AUDIO),
        PartEnd(),
    ]


def test_data_is_handed_out_while_it_streams() -> None:
    parser = MultipartParser(BOUNDARY)
    head_end = BODY.index(b"audio/webm\r\n\r\n") + len(b"audio/webm\r\n\r\n")
    parser.feed(BODY[:head_end])

    events = parser.feed(AUDIO[:5000])

    # All but the last few bytes, which could be the start of the next delimiter.
    assert events == [PartData(AUDIO[: 5000 - len(BOUNDARY) - 3])]


def test_an_empty_part_has_no_data_event() -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="audio"; filename="x"\r\n\r\n\r\n--b--\r\n'
    parser = MultipartParser(b"b")
    assert parser.feed(body) == [PartStart("audio", "x", None), PartEnd()]
    assert parser.done


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--", "has no name"),
        (b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\nx', "before its closing"),
        (b"--bxyz\r\n", "followed by something else"),
        (b"--b\r\n" + b"X-Long: " + b"y" * 9000, "headers are too long"),
    ],
    ids=["no-name", "unterminated", "bad-delimiter", "huge-headers"],
)
def test_malformed_forms_are_refused(body: bytes, message: str) -> None:
    def parse_whole() -> None:
        parser = MultipartParser(b"b")
        parser.feed(body)
        parser.close()

    with pytest.raises(MultipartError, match=message):
        parse_whole()


@pytest.mark.parametrize(
    ("header", "boundary"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ('multipart/form-data; boundary="a b:c"', b"a b:c"),
        ("multipart/form-data", None),
        ("application/json", None),
        ("multipart/form-data; boundary=" + "x" * 71, None),
    ],
)
def test_the_boundary_comes_from_the_content_type(header: str, boundary: bytes | None) -> None:
    assert boundary_of(header) == boundary


@pytest.mark.parametrize(
    ("header", "span"),
    [
        (None, None),
        ("bytes=0-9", (0, 9)),
        ("bytes=10-", (10, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-500", (0, 99)),
        ("bytes=95-500", (95, 99)),
        ("bytes=99-99", (99, 99)),
        ("bytes=5-2", None),
        ("bytes=0-1,5-6", None),
        ("items=0-9", None),
        ("bytes=", None),
        ("bytes=a-b", None),
    ],
)
def test_one_byte_range_is_understood_and_others_ignored(
    header: str | None, span: tuple[int, int] | None
) -> None:
    assert parse_range(header, 100) == span


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_a_range_past_the_end_cannot_be_satisfied(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


def split(pieces: list[str]) -> list[str]:
    splitter = SentenceSplitter(max_chars=60)
    sentences = [s for piece in pieces for s in splitter.add(piece)]
    return [*sentences, splitter.flush()]


def test_sentences_are_cut_once_they_are_complete() -> None:
    assert split(
        ["Hello there. ", "Dr. Smith paid 3.", "5 dollars! Was it", " worth it? ", "Yes"]
    ) == [
        "Hello there.",
        "Dr. Smith paid 3.5 dollars!",
        "Was it worth it?",
        "Yes",
    ]


def test_a_sentence_ends_only_when_white_space_follows() -> None:
    splitter = SentenceSplitter()
    assert splitter.add("It costs 3.") == []
    assert splitter.add("5 euros.") == []
    assert splitter.add("\n") == ["It costs 3.5 euros."]


def test_a_long_sentence_is_cut_at_a_clause_or_a_word() -> None:
    text = "one two three four five six, seven eight nine ten eleven twelve thirteen fourteen "
    assert split([text]) == [
        "one two three four five six,",
        "seven eight nine ten eleven twelve thirteen fourteen",
    ]


@pytest.mark.parametrize(
    ("sentence", "spoken"),
    [
        ("**Bold** and `code` here.", "Bold and code here."),
        ("## A title", "A title"),
        ("- a list item", "a list item"),
        ("...", ""),
        ("—", ""),
    ],
)
def test_markup_is_not_spoken(sentence: str, spoken: str) -> None:
    assert speakable(sentence) == spoken
