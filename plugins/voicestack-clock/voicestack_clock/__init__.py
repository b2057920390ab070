"""voicestack tools that tell the time and do calendar arithmetic in any IANA time zone.

Models are poor at clocks and calendars: they do not know the current time, and they miscount
across month ends and daylight-saving changes. These tools do both exactly, with zoneinfo.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import zoneinfo
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from voicestack import ToolCtx, tool

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_EXAMPLES = "such as 'Europe/Paris', 'America/New_York' or 'UTC'"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@functools.cache
def _zone_names_by_lower() -> dict[str, str]:
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone `name`; raises ValueError with close matches when there is none."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    names = _zone_names_by_lower()
    close = difflib.get_close_matches(name.strip().lower(), names, n=3, cutoff=0.6)
    shown = [repr(names[c]) for c in close]
    hint = ""
    if shown:
        choices = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
        hint = f" Did you mean {choices}?"
    raise ValueError(f"Unknown time zone {name!r}: use an IANA name {_EXAMPLES}.{hint}")


def _checked_zone(name: str) -> str:
    zone(name)
    return name


def _checked_moment(text: str) -> str:
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 date or date-time: write '2025-03-08', "
            "'2025-03-08T14:30' or '2025-03-08T14:30:00+01:00'."
        ) from None
    return text


TimeZone = Annotated[
    str,
    Field(max_length=64, description=f"An IANA time zone name, {_EXAMPLES}."),
    AfterValidator(_checked_zone),
]
Moment = Annotated[
    str,
    Field(
        max_length=64,
        description="An ISO 8601 date or date-time; without a UTC offset it is read in `timezone`.",
    ),
    AfterValidator(_checked_moment),
]


def _offset_text(offset: dt.timedelta | None) -> str:
    minutes = int((offset or dt.timedelta()).total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def describe_moment(when: dt.datetime, timezone: str) -> dict[str, Any]:
    """An aware datetime as the tools report it: ISO text, weekday, offset, abbreviation."""
    return {
        "iso": when.isoformat(timespec="seconds"),
        "date": when.date().isoformat(),
        "time": when.time().isoformat(timespec="seconds"),
        "weekday": WEEKDAYS[when.weekday()],
        "timezone": timezone,
        "utcOffset": _offset_text(when.utcoffset()),
        "abbreviation": when.tzname(),
        "dst": bool(when.dst()),
    }


def parse_moment(text: str, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """An ISO date or date-time as an aware datetime in `tz` (naive input is read in `tz`)."""
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=tz)
    return parsed.astimezone(tz)


class CurrentTimeArgs(BaseModel):
    """Where to tell the time."""

    timezone: TimeZone = "UTC"


class DateAddArgs(BaseModel):
    """A start moment and how far to move from it."""

    start: Moment
    days: int = Field(0, description="Calendar days to add (negative to go back).")
    hours: int = Field(0, description="Hours of elapsed time to add (negative to go back).")
    minutes: int = Field(0, description="Minutes of elapsed time to add (negative to go back).")
    timezone: TimeZone = "UTC"


class TimeBetweenArgs(BaseModel):
    """Two moments to measure between."""

    start: Moment
    end: Moment
    timezone: TimeZone = "UTC"


@tool
async def current_time(ctx: ToolCtx, args: CurrentTimeArgs) -> dict[str, Any]:
    """The current date and time in a time zone, with its weekday, UTC offset and abbreviation."""
    return describe_moment(_now().astimezone(zone(args.timezone)), args.timezone)


@tool
async def date_add(ctx: ToolCtx, args: DateAddArgs) -> dict[str, Any]:
    """Add days, hours and minutes to a date or date-time, correctly across daylight saving.

    Days move the calendar (the wall-clock time stays, also across a daylight-saving change);
    hours and minutes are elapsed time.
    """
    tz = zone(args.timezone)
    start = parse_moment(args.start, tz)
    try:
        wall = start.replace(tzinfo=None) + dt.timedelta(days=args.days)
        # Through UTC, so a wall time skipped by a daylight-saving change moves forward to a
        # real one, and elapsed time is counted in real hours.
        moved = wall.replace(tzinfo=tz, fold=start.fold).astimezone(dt.UTC)
        result = (moved + dt.timedelta(hours=args.hours, minutes=args.minutes)).astimezone(tz)
    except OverflowError:
        raise ValueError("The result falls outside the years 1 to 9999.") from None
    return {"start": start.isoformat(timespec="seconds"), **describe_moment(result, args.timezone)}


def _span_text(seconds: int) -> str:
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    units = [(days, "day"), (hours, "hour"), (minutes, "minute"), (seconds, "second")]
    parts = [f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in units if n]
    if not parts:
        return "0 seconds"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


@tool
async def time_between(ctx: ToolCtx, args: TimeBetweenArgs) -> dict[str, Any]:
    """The elapsed time and the number of calendar days from one moment to another."""
    tz = zone(args.timezone)
    start, end = parse_moment(args.start, tz), parse_moment(args.end, tz)
    # Aware datetimes sharing a tzinfo subtract as wall times; through UTC they subtract as real.
    seconds = round((end.astimezone(dt.UTC) - start.astimezone(dt.UTC)).total_seconds())
    return {
        "totalSeconds": seconds,
        "calendarDays": (end.date() - start.date()).days,
        "text": _span_text(abs(seconds)) + (" before the start" if seconds < 0 else ""),
    }
