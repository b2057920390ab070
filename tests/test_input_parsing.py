"""The pieces every route parses client input with: any length, any depth, never a crash.

Python's int() refuses over 4,300 digits and its JSON parser recurses once per level; these
checks run before either, in one pass over the text. tests/test_malformed_input.py sends the
same inputs to every route of a running server.
"""

from __future__ import annotations

import time

import pytest

from voicestack.echo import ECHO_CHARS, echoed
from voicestack.http.body import INT64_MAX, INT64_MIN, parse_int64
from voicestack.http.json_checks import MAX_JSON_DEPTH, holds_lone_surrogate, nested_too_deep
from voicestack.http.ranges import RangeNotSatisfiable, parse_range

HUGE = "9" * 5000


def nested(depth: int) -> str:
    """A JSON array `depth` levels deep."""
    return "[" * depth + "]" * depth


def test_depth_is_measured_up_to_the_limit_and_past_it() -> None:
    assert nested_too_deep(nested(MAX_JSON_DEPTH)) is False
    assert nested_too_deep(nested(MAX_JSON_DEPTH + 1)) is True
    assert nested_too_deep('{"a": ' * 600 + "1" + "}" * 600) is True


def test_brackets_in_strings_do_not_count() -> None:
    inside = '"' + "[{" * 5000 + '\\"[' + '"'
    assert nested_too_deep(f"[{inside}, {inside}]") is False
    assert nested_too_deep("[]" * 100_000) is False  # many, side by side


def test_a_million_levels_are_measured_without_recursion_in_well_under_a_second() -> None:
    started = time.perf_counter()
    assert nested_too_deep(nested(1_000_000)) is True
    assert time.perf_counter() - started < 1.0


def test_a_lone_surrogate_is_found_in_strings_and_keys_but_a_pair_is_not() -> None:
    assert holds_lone_surrogate('["\\ud800"]', ["\ud800"]) is True
    assert holds_lone_surrogate('{"\\udfff": 1}', {"\udfff": 1}) is True
    assert holds_lone_surrogate('["\\ud83d\\ude00"]', ["\U0001f600"]) is False
    assert holds_lone_surrogate('["\\\\ud800"]', ["\\ud800"]) is False  # an escaped backslash


def test_a_deep_value_is_walked_without_recursion() -> None:
    value: list = ["\ud800"]
    for _ in range(100_000):
        value = [value]
    assert holds_lone_surrogate("\\ud800", value) is True


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), (" 42 ", 42), ("+7", 7), ("-7", -7), ("0" * 5000 + "5", 5)],
)
def test_whole_numbers_of_any_length_are_read(text: str, value: int) -> None:
    assert parse_int64(text) == value


def test_the_64_bit_range_is_exact() -> None:
    assert parse_int64(str(INT64_MAX)) == INT64_MAX
    assert parse_int64(str(INT64_MIN)) == INT64_MIN
    for text in (str(INT64_MAX + 1), str(INT64_MIN - 1), HUGE, "-" + HUGE):
        with pytest.raises(OverflowError, match="is outside the 64-bit range"):
            parse_int64(text)


@pytest.mark.parametrize("text", ["", "-", "1_000", "²", "1.5", "0x10", "--1"])
def test_anything_else_is_not_a_whole_number(text: str) -> None:
    with pytest.raises(ValueError, match="is not a whole number"):
        parse_int64(text)


def test_ranges_with_positions_of_thousands_of_digits() -> None:
    assert parse_range(f"bytes=0-{HUGE}", 100) == (0, 99)
    assert parse_range(f"bytes=-{HUGE}", 100) == (0, 99)
    assert parse_range(f"bytes=5-{'0' * 5000}3", 100) is None  # last before first: ignored
    with pytest.raises(RangeNotSatisfiable):
        parse_range(f"bytes={HUGE}-", 100)


def test_echoed_input_is_cut_to_a_prefix() -> None:
    assert echoed("thr_1") == "thr_1"
    assert echoed("x" * ECHO_CHARS) == "x" * ECHO_CHARS
    assert echoed("x" * 200_000) == "x" * ECHO_CHARS + "…"
