"""The clock tools, called as the model calls them: JSON arguments, validation, run_tool."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import voicestack_clock
from voicestack_clock import current_time, date_add, time_between, zone

from voicestack.agent.tools import (
    Tool,
    ToolArgsError,
    ToolCtx,
    ToolOutcome,
    parse_tool_args,
    run_tool,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _unused(*_args: Any) -> Any:
    raise AssertionError("the clock tools use neither the database nor server functions")


CTX = ToolCtx(
    user=None,
    thread_id="thread-1",
    call_id="call-1",
    store=None,  # type: ignore[arg-type]
    run_query=_unused,
    run_mutation=_unused,
    report_progress=_unused,
)


async def call(tool: Tool, arguments: dict[str, Any]) -> ToolOutcome:
    return await run_tool(tool, CTX, parse_tool_args(tool, json.dumps(arguments)), 5.0)


def freeze(monkeypatch: pytest.MonkeyPatch, utc: str) -> None:
    now = dt.datetime.fromisoformat(utc)
    monkeypatch.setattr(voicestack_clock, "_now", lambda: now)


async def test_current_time_in_a_summer_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    freeze(monkeypatch, "2025-07-14T10:00:00+00:00")
    assert await call(current_time, {"timezone": "Europe/Paris"}) == ToolOutcome(
        True,
        {
            "iso": "2025-07-14T12:00:00+02:00",
            "date": "2025-07-14",
            "time": "12:00:00",
            "weekday": "Monday",
            "timezone": "Europe/Paris",
            "utcOffset": "+02:00",
            "abbreviation": "CEST",
            "dst": True,
        },
        None,
    )


async def test_current_time_defaults_to_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    freeze(monkeypatch, "2025-01-01T00:00:00+00:00")
    assert (await call(current_time, {})).result == {
        "iso": "2025-01-01T00:00:00+00:00",
        "date": "2025-01-01",
        "time": "00:00:00",
        "weekday": "Wednesday",
        "timezone": "UTC",
        "utcOffset": "+00:00",
        "abbreviation": "UTC",
        "dst": False,
    }


@pytest.mark.parametrize(
    ("timezone", "offset", "local"),
    [
        ("Asia/Kathmandu", "+05:45", "2025-01-15T17:45:00+05:45"),
        ("America/St_Johns", "-03:30", "2025-01-15T08:30:00-03:30"),
    ],
)
async def test_current_time_with_partial_hour_offsets(
    monkeypatch: pytest.MonkeyPatch, timezone: str, offset: str, local: str
) -> None:
    freeze(monkeypatch, "2025-01-15T12:00:00+00:00")
    result = (await call(current_time, {"timezone": timezone})).result
    assert (result["utcOffset"], result["iso"]) == (offset, local)


async def test_current_time_is_now_without_a_frozen_clock() -> None:
    before = dt.datetime.now(dt.UTC)
    result = (await call(current_time, {"timezone": "Asia/Tokyo"})).result
    after = dt.datetime.now(dt.UTC)
    reported = dt.datetime.fromisoformat(result["iso"])
    assert before.replace(microsecond=0) <= reported <= after
    assert result["utcOffset"] == "+09:00"


@pytest.mark.parametrize(
    ("arguments", "iso", "weekday", "abbreviation"),
    [
        # New York springs forward on 2025-03-09: a calendar day keeps the wall time...
        (
            {"start": "2025-03-08T12:00", "days": 1, "timezone": "America/New_York"},
            "2025-03-09T12:00:00-04:00",
            "Sunday",
            "EDT",
        ),
        # ...while 24 hours of elapsed time land an hour later on the clock.
        (
            {"start": "2025-03-08T12:00", "hours": 24, "timezone": "America/New_York"},
            "2025-03-09T13:00:00-04:00",
            "Sunday",
            "EDT",
        ),
        # 02:30 does not exist that day; it moves forward to the real time.
        (
            {"start": "2025-03-08T02:30", "days": 1, "timezone": "America/New_York"},
            "2025-03-09T03:30:00-04:00",
            "Sunday",
            "EDT",
        ),
        # Berlin falls back on 2025-10-26.
        (
            {"start": "2025-10-25T09:00", "days": 1, "timezone": "Europe/Berlin"},
            "2025-10-26T09:00:00+01:00",
            "Sunday",
            "CET",
        ),
        (
            {"start": "2025-10-25T09:00", "hours": 24, "timezone": "Europe/Berlin"},
            "2025-10-26T08:00:00+01:00",
            "Sunday",
            "CET",
        ),
        # Negative days, a date without a time, a leap year.
        ({"start": "2024-03-01", "days": -1}, "2024-02-29T00:00:00+00:00", "Thursday", "UTC"),
        (
            {"start": "2025-01-31T23:50", "days": 1, "hours": -1, "minutes": 15},
            "2025-02-01T23:05:00+00:00",
            "Saturday",
            "UTC",
        ),
    ],
)
async def test_date_add(
    arguments: dict[str, Any], iso: str, weekday: str, abbreviation: str
) -> None:
    outcome = await call(date_add, arguments)
    assert outcome.ok, outcome.error
    assert (outcome.result["iso"], outcome.result["weekday"], outcome.result["abbreviation"]) == (
        iso,
        weekday,
        abbreviation,
    )


async def test_date_add_reads_an_offset_start_in_the_given_zone() -> None:
    outcome = await call(
        date_add, {"start": "2025-06-01T12:00:00Z", "minutes": 30, "timezone": "Asia/Tokyo"}
    )
    assert outcome.result == {
        "start": "2025-06-01T21:00:00+09:00",
        "iso": "2025-06-01T21:30:00+09:00",
        "date": "2025-06-01",
        "time": "21:30:00",
        "weekday": "Sunday",
        "timezone": "Asia/Tokyo",
        "utcOffset": "+09:00",
        "abbreviation": "JST",
        "dst": False,
    }


async def test_date_add_past_year_9999_is_an_error_for_the_model() -> None:
    assert await call(date_add, {"start": "9999-12-31", "days": 1}) == ToolOutcome(
        False, None, "ValueError: The result falls outside the years 1 to 9999."
    )


async def test_time_between_counts_real_hours_across_a_dst_change() -> None:
    outcome = await call(
        time_between,
        {"start": "2025-03-08T12:00", "end": "2025-03-09T12:00", "timezone": "America/New_York"},
    )
    assert outcome.result == {"totalSeconds": 82800, "calendarDays": 1, "text": "23 hours"}


async def test_time_between_backwards_and_with_offsets() -> None:
    outcome = await call(
        time_between, {"start": "2025-01-02T10:00:01+01:00", "end": "2025-01-01T08:00:00Z"}
    )
    assert outcome.result == {
        "totalSeconds": -90001,
        "calendarDays": -1,
        "text": "1 day, 1 hour and 1 second before the start",
    }


def test_an_unknown_zone_is_an_argument_error_naming_the_fix() -> None:
    with pytest.raises(ToolArgsError) as caught:
        parse_tool_args(current_time, '{"timezone": "Mars/Olympus_Mons"}')
    assert caught.value.message == (
        "Invalid arguments for tool 'current_time':\n"
        "- timezone: Unknown time zone 'Mars/Olympus_Mons': use an IANA name such as "
        "'Europe/Paris', 'America/New_York' or 'UTC'. (got \"Mars/Olympus_Mons\")\n"
        'Expected arguments: timezone (string, optional, default "UTC").'
    )


def test_a_misspelled_zone_suggests_the_real_one() -> None:
    with pytest.raises(ValueError, match=r"Did you mean 'Europe/Paris'"):
        zone("europe/paris")
    with pytest.raises(ValueError, match=r"Did you mean 'America/New_York'"):
        zone("America/New York")


def test_a_bad_start_is_an_argument_error() -> None:
    with pytest.raises(ToolArgsError) as caught:
        parse_tool_args(date_add, '{"start": "next tuesday", "days": "two"}')
    assert caught.value.message == (
        "Invalid arguments for tool 'date_add':\n"
        "- start: 'next tuesday' is not an ISO 8601 date or date-time: write '2025-03-08', "
        "'2025-03-08T14:30' or '2025-03-08T14:30:00+01:00'. (got \"next tuesday\")\n"
        "- days: Input should be a valid integer, unable to parse string as an integer "
        '(got "two")\n'
        "Expected arguments: start (string, required), days (integer, optional, default 0), "
        "hours (integer, optional, default 0), minutes (integer, optional, default 0), "
        'timezone (string, optional, default "UTC").'
    )


def test_the_plugin_module_exposes_exactly_its_three_tools() -> None:
    tools = [v for v in vars(voicestack_clock).values() if isinstance(v, Tool)]
    assert [(t.name, t.needs_approval) for t in tools] == [
        ("current_time", False),
        ("date_add", False),
        ("time_between", False),
    ]
