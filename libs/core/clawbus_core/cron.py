"""Schedules: when a cron job or heartbeat fires next. Pure: every function takes the time.

    Schedule.cron(expr, tz)     a 5-field cron expression evaluated in an IANA time zone
    Schedule.every(ms, anchor)  every `ms` milliseconds, on the grid anchor + k * ms
    Schedule.at(instant)        once
    ActiveHours(start, end, tz) a daily local-time window (heartbeats fire only inside it)

Cron expressions are Vixie cron's: `minute hour day-of-month month day-of-week`, each field a
list of `*`, `n`, `a-b`, with an optional `/step` (`*/15`, `1-30/2`, `5/10` = 5-max/10);
months JAN-DEC and weekdays SUN-SAT by name; weekday 7 is Sunday too; and the macros
@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly. As in Vixie cron, when
both day fields are restricted (neither starts with `*`) a day matches if EITHER matches;
otherwise both must.

Across daylight-saving changes (the local wall clock is what the expression names):
- a local time that does not exist (the clock jumps 02:00 -> 03:00) fires at the first
  instant after the gap (03:00); several such times collapse into that one firing;
- a local time that happens twice (03:00 -> 02:00) fires once, at its first occurrence.

Every instant here is timezone-aware and whole milliseconds (what Postgres and the firing's
idempotency key hold). Bad input raises InvalidRequest naming the field (`param`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clawbus_protocol.errors import InvalidRequest

ScheduleKind = Literal["cron", "every", "at"]

MIN_EVERY_MS = 1_000
MAX_EVERY_MS = 366 * 86_400_000
MAX_EXPR_CHARS = 200
# How far ahead a cron expression is searched: covers Feb 29 on any weekday.
_SEARCH_DAYS = 366 * 8
_ONE_MS = timedelta(milliseconds=1)
_MINUTE = timedelta(minutes=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {
    name: n
    for n, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
        start=1,
    )
}
_WEEKDAYS = {name: n for n, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_ITEM = re.compile(r"^(?P<range>\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>[0-9]+))?$")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


_FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day of month", 1, 31, {}),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 7, _WEEKDAYS),
)


def _refuse(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {message}", param=param)


def _value(text: str, field: _Field, param: str) -> int:
    upper = text.upper()
    if upper in field.names:
        return field.names[upper]
    if not text.isdigit():
        raise _refuse(f"{text!r} is not a valid {field.name}", param)
    value = int(text)
    if not field.low <= value <= field.high:
        raise _refuse(f"{field.name} {value} is out of range {field.low}-{field.high}", param)
    return value


def _parse_field(text: str, field: _Field, param: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            raise _refuse(f"{item!r} is not a valid {field.name} field", param)
        part, step_text = match["range"], match["step"]
        if part == "*":
            low, high = field.low, field.high
        elif "-" in part:
            first, last = part.split("-")
            low, high = _value(first, field, param), _value(last, field, param)
            if low > high:
                raise _refuse(f"{field.name} range {part!r} runs backwards", param)
        else:
            low = _value(part, field, param)
            # `5/10` means 5-max/10, as in Vixie cron; a bare `5` is just 5.
            high = field.high if step_text is not None else low
        step = int(step_text) if step_text is not None else 1
        if step == 0:
            raise _refuse(f"{field.name} step must be at least 1", param)
        values.update(range(low, high + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronExpr:
    """A parsed 5-field expression (`text` as given, normalised to single spaces)."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # the day-of-month field starts with `*`
    any_weekday: bool  # the day-of-week field starts with `*`

    @classmethod
    def parse(cls, text: str, param: str = "schedule.expr") -> CronExpr:
        raw = " ".join(text.split())
        if not raw:
            raise _refuse("a cron expression is required", param)
        if len(raw) > MAX_EXPR_CHARS:
            raise _refuse(f"longer than {MAX_EXPR_CHARS} characters", param)
        expanded = _MACROS.get(raw.lower(), raw) if raw.startswith("@") else raw
        if expanded.startswith("@"):
            raise _refuse(f"unknown macro {raw!r} (@reboot is not supported)", param)
        parts = expanded.split(" ")
        if len(parts) != 5:
            raise _refuse(
                f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}",
                param,
            )
        minute, hour, day, month, weekday = (
            _parse_field(part, field, param) for part, field in zip(parts, _FIELDS, strict=True)
        )
        expr = cls(
            text=raw,
            minutes=tuple(sorted(minute)),
            hours=tuple(sorted(hour)),
            days=day,
            months=month,
            weekdays=frozenset(d % 7 for d in weekday),
            any_day=parts[2].startswith("*"),
            any_weekday=parts[4].startswith("*"),
        )
        if not any(expr.matches_day(d) for d in _days_from(date(2024, 1, 1), 366 * 4 + 1)):
            raise _refuse(f"{raw!r} never matches a day", param)
        return expr

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        by_day = day.day in self.days
        by_weekday = day.isoweekday() % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return by_day and by_weekday
        return by_day or by_weekday

    def next_after(self, instant: datetime, zone: ZoneInfo) -> datetime:
        """The first firing strictly after `instant`."""
        local = instant.astimezone(zone)
        start = local.replace(tzinfo=None, second=0, microsecond=0) + _MINUTE
        for day in _days_from(start.date(), _SEARCH_DAYS):
            if not self.matches_day(day):
                continue
            first_day = day == start.date()
            for hour in self.hours:
                if first_day and hour < start.hour:
                    continue
                for minute in self.minutes:
                    wall = datetime.combine(day, time(hour, minute))
                    if wall < start:
                        continue
                    fired = _instant(wall, zone)
                    if fired > instant:
                        return fired
        raise _refuse(f"{self.text!r} has no firing within {_SEARCH_DAYS} days", "schedule.expr")


def _days_from(first: date, count: int) -> Iterator[date]:
    return (first + timedelta(days=n) for n in range(count))


def _exists(wall: datetime, zone: ZoneInfo) -> bool:
    aware = wall.replace(tzinfo=zone)
    return aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a local wall time names: its first occurrence when it happens twice, the
    end of the gap when it does not happen at all."""
    while not _exists(wall, zone):
        wall += _MINUTE  # gaps are whole minutes (in practice 30 or 60 of them)
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def zone(name: str | None, param: str = "schedule.tz") -> ZoneInfo:
    """The IANA zone `name` (UTC when None or empty)."""
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _refuse(
            f"unknown time zone {name!r} (an IANA name, e.g. Europe/Berlin)", param
        ) from None


def whole_ms(instant: datetime) -> datetime:
    """`instant` in UTC, cut to whole milliseconds."""
    utc = instant.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def from_ms(ms: int, param: str) -> datetime:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise _refuse(f"{ms} is not a valid time in milliseconds since 1970", param) from None


def to_ms(instant: datetime) -> int:
    return (instant - _EPOCH) // _ONE_MS


def parse_instant(text: str, param: str = "schedule.at") -> datetime:
    """An ISO 8601 time; one without an offset is UTC."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _refuse(f"{text!r} is not an ISO 8601 time", param) from None
    return whole_ms(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


@dataclass(frozen=True)
class Schedule:
    kind: ScheduleKind
    expr: CronExpr | None = None
    tz: str | None = None  # cron only; None is UTC
    every_ms: int | None = None
    anchor: datetime | None = None  # every: the grid's origin
    at: datetime | None = None

    @classmethod
    def cron(cls, expr: str, tz: str | None = None) -> Schedule:
        zone(tz)  # refuse an unknown zone now, not at the first firing
        return cls("cron", expr=CronExpr.parse(expr), tz=tz or None)

    @classmethod
    def every(cls, every_ms: int, anchor: datetime) -> Schedule:
        if not MIN_EVERY_MS <= every_ms <= MAX_EVERY_MS:
            raise _refuse(
                f"must be between {MIN_EVERY_MS} (1 s) and {MAX_EVERY_MS} (366 days)",
                "schedule.everyMs",
            )
        return cls("every", every_ms=every_ms, anchor=whole_ms(anchor))

    @classmethod
    def once(cls, at: datetime) -> Schedule:
        return cls("at", at=whole_ms(at))

    def next_after(self, instant: datetime) -> datetime | None:
        """The first firing strictly after `instant`; None when there is none (`at`)."""
        if self.kind == "cron":
            assert self.expr is not None
            return self.expr.next_after(instant, zone(self.tz))
        if self.kind == "every":
            assert self.every_ms is not None
            assert self.anchor is not None
            if instant < self.anchor:
                return self.anchor
            elapsed = to_ms(instant) - to_ms(self.anchor)
            steps = elapsed // self.every_ms + 1
            return self.anchor + timedelta(milliseconds=steps * self.every_ms)
        assert self.at is not None
        return self.at if instant < self.at else None

    def first(self, now: datetime) -> datetime | None:
        """The first firing of a job created (or re-enabled) at `now`: an `at` time already
        past still fires once (now), the others fire after `now`."""
        if self.kind == "at":
            return self.at
        return self.next_after(now)


_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$|^24:00$")


@dataclass(frozen=True)
class ActiveHours:
    """A daily window of local time, `start` inclusive, `end` exclusive ("HH:MM"; end may be
    "24:00"; an end before the start spans midnight)."""

    start: time
    end: time | None  # None: midnight at the end of the day
    tz: str | None = None

    @classmethod
    def parse(cls, start: str, end: str, tz: str | None = None) -> ActiveHours:
        param = "heartbeat.activeHours"
        for name, value in (("start", start), ("end", end)):
            if not _CLOCK.match(value):
                raise _refuse(f"{name} {value!r} is not a time HH:MM (00:00-24:00)", param)
        if start == "24:00":
            raise _refuse("start must be before 24:00", param)
        zone(tz, f"{param}.tz")
        begin = time.fromisoformat(start)
        finish = None if end == "24:00" else time.fromisoformat(end)
        if finish == begin:
            raise _refuse("start and end are equal: the window would be empty", param)
        return cls(begin, finish, tz or None)

    @property
    def clock_times(self) -> tuple[str, str]:
        """(start, end) as written: "HH:MM", the end "24:00" for midnight."""
        end = "24:00" if self.end is None else self.end.strftime("%H:%M")
        return self.start.strftime("%H:%M"), end

    def contains(self, instant: datetime) -> bool:
        now = instant.astimezone(zone(self.tz)).time().replace(tzinfo=None)
        if self.end is None:
            return now >= self.start
        if self.start < self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end

    def next_open(self, instant: datetime) -> datetime:
        """`instant` if inside the window, else the next instant the window opens."""
        if self.contains(instant):
            return instant
        local = zone(self.tz)
        day = instant.astimezone(local).date()
        for offset in range(3):
            opens = _instant(datetime.combine(day + timedelta(days=offset), self.start), local)
            if opens > instant:
                return opens
        raise AssertionError("a daily window opens within two days")  # pragma: no cover


def next_in_window(
    schedule: Schedule, after: datetime, window: ActiveHours | None
) -> datetime | None:
    """The schedule's first firing after `after` that falls inside `window` (if any)."""
    candidate = schedule.next_after(after)
    for _ in range(1000):
        if candidate is None or window is None or window.contains(candidate):
            return candidate
        candidate = schedule.next_after(window.next_open(candidate) - _ONE_MS)
    return None


MissedPolicy = Literal["run_once", "skip"]


@dataclass(frozen=True)
class Plan:
    """What the scheduler does with a job due at `due`, seen at `now`."""

    fire: bool  # record a firing for `due`
    next_run_at: datetime | None  # then the job is due again at this time (None: never)


def plan(
    schedule: Schedule,
    due: datetime,
    now: datetime,
    *,
    missed: MissedPolicy,
    grace: timedelta,
    window: ActiveHours | None = None,
) -> Plan:
    """Fire `due` once, whenever it is seen, unless it was missed (later than `grace`) and
    the job skips missed times, or it falls outside the job's active hours. Either way the
    job continues with its first time after `now`: the times missed while no scheduler ran
    are never fired as a burst."""
    fire = not (missed == "skip" and now - due > grace)
    if window is not None and not window.contains(due):
        fire = False
    if schedule.kind == "at":
        return Plan(fire, None)
    return Plan(fire, next_in_window(schedule, max(due, now), window))
