"""Schedules (clawbus_core.cron): cron expressions in a time zone, intervals, one-off times and
active hours, with the clock passed in: every case names the instant it asks about."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from clawbus_core.cron import ActiveHours, CronExpr, Plan, Schedule, next_in_window, plan, zone
from clawbus_protocol.errors import InvalidRequest

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def firings(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    out = []
    for _ in range(count):
        nxt = schedule.next_after(after)
        assert nxt is not None
        out.append(nxt)
        after = nxt
    return out


def local(instants: list[datetime], tz: str) -> list[str]:
    return [i.astimezone(zone(tz)).strftime("%m-%d %H:%M%z") for i in instants]


# --- parsing ----------------------------------------------------------------------------------


def test_fields_take_ranges_steps_lists_and_names() -> None:
    expr = CronExpr.parse("0,30 9-17/4 1-7 JAN,jul-Sep MON-FRI")
    assert expr.minutes == (0, 30)
    assert expr.hours == (9, 13, 17)
    assert expr.days == frozenset(range(1, 8))
    assert expr.months == frozenset({1, 7, 8, 9})
    assert expr.weekdays == frozenset({1, 2, 3, 4, 5})
    assert CronExpr.parse("*/20 * * * *").minutes == (0, 20, 40)
    assert CronExpr.parse("5/20 * * * *").minutes == (5, 25, 45)  # 5-59/20
    assert CronExpr.parse("0 0 * * 7").weekdays == frozenset({0})  # 7 is Sunday too
    assert CronExpr.parse("0 0 * * 5-7").weekdays == frozenset({5, 6, 0})
    daily = CronExpr.parse("@daily")
    assert (daily.minutes, daily.hours, daily.any_day, daily.any_weekday) == (
        (0,),
        (0,),
        True,
        True,
    )
    assert CronExpr.parse("@hourly").minutes == (0,)
    assert CronExpr.parse("  0   12 * *  * ").text == "0 12 * * *"


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("", "required"),
        ("* * * *", "expected 5 fields"),
        ("0 * * * * *", "expected 5 fields"),  # no seconds field
        ("60 * * * *", "minute 60 is out of range 0-59"),
        ("* 24 * * *", "hour 24 is out of range 0-23"),
        ("* * 0 * *", "day of month 0 is out of range 1-31"),
        ("* * * 13 *", "month 13 is out of range 1-12"),
        ("* * * * 8", "day of week 8 is out of range 0-7"),
        ("*/0 * * * *", "step must be at least 1"),
        ("30-10 * * * *", "runs backwards"),
        ("* * * FOO *", "'FOO' is not a valid month"),
        ("* * * * MON-FOO", "'FOO' is not a valid day of week"),
        ("1,,2 * * * *", "is not a valid minute field"),
        ("0 0 30 2 *", "never matches"),
        ("@reboot", "not supported"),
    ],
)
def test_a_bad_expression_is_refused_naming_the_field(expr: str, problem: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        CronExpr.parse(expr)
    assert refused.value.info.details["param"] == "schedule.expr"
    assert problem in refused.value.info.message
    assert refused.value.info.message.startswith("schedule.expr: ")


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(InvalidRequest) as refused:
        Schedule.cron("0 9 * * *", "Mars/Olympus_Mons")
    assert refused.value.info.details["param"] == "schedule.tz"
    assert "unknown time zone" in refused.value.info.message


def test_an_interval_outside_its_bounds_is_refused() -> None:
    with pytest.raises(InvalidRequest) as refused:
        Schedule.every(999, utc(2026, 1, 1))
    assert refused.value.info.details["param"] == "schedule.everyMs"


# --- evaluation -------------------------------------------------------------------------------


def test_day_fields_combine_as_in_vixie_cron() -> None:
    # Both restricted: the 13th OR a Friday.
    either = Schedule.cron("0 0 13 * 5")
    got = firings(either, utc(2026, 2, 1), 4)
    assert [d.strftime("%a %d") for d in got] == ["Fri 06", "Fri 13", "Fri 20", "Fri 27"]
    got = firings(either, utc(2026, 3, 1), 3)
    assert [d.strftime("%a %d") for d in got] == ["Fri 06", "Fri 13", "Fri 20"]
    got = firings(either, utc(2026, 4, 10, 1), 2)
    assert [d.strftime("%a %d") for d in got] == ["Mon 13", "Fri 17"]
    # One starts with `*` (even `*/2`): both must match, odd days that are Mondays.
    both = Schedule.cron("0 0 */2 * MON")
    got = firings(both, utc(2026, 5, 31), 3)
    assert [d.strftime("%a %d") for d in got] == ["Mon 01", "Mon 15", "Mon 29"]


def test_next_firing_is_strictly_after_the_instant() -> None:
    hourly = Schedule.cron("0 * * * *")
    assert hourly.next_after(utc(2026, 5, 1, 10, 0)) == utc(2026, 5, 1, 11, 0)
    assert hourly.next_after(utc(2026, 5, 1, 10, 59, 59)) == utc(2026, 5, 1, 11, 0)
    yearly = Schedule.cron("@yearly")
    assert yearly.next_after(utc(2026, 5, 1)) == utc(2027, 1, 1)
    leap = Schedule.cron("0 0 29 2 *")
    assert leap.next_after(utc(2026, 1, 1)) == utc(2028, 2, 29)


def test_a_time_zone_places_the_wall_clock() -> None:
    nine = Schedule.cron("0 9 * * *", BERLIN)
    assert nine.next_after(utc(2026, 1, 10, 12)) == utc(2026, 1, 11, 8)  # CET, +01:00
    assert nine.next_after(utc(2026, 7, 10, 12)) == utc(2026, 7, 11, 7)  # CEST, +02:00


def test_berlin_spring_forward_fires_a_missing_time_once_at_the_end_of_the_gap() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
    daily = Schedule.cron("30 2 * * *", BERLIN)
    got = firings(daily, utc(2026, 3, 27, 12), 3)
    assert local(got, BERLIN) == [
        "03-28 02:30+0100",
        "03-29 03:00+0200",  # at the end of the gap, once
        "03-30 02:30+0200",
    ]
    quarter = Schedule.cron("*/15 * * * *", BERLIN)
    got = firings(quarter, utc(2026, 3, 29, 0, 30), 4)  # 01:30 CET
    # 02:00, 02:15, 02:30, 02:45 do not exist: they and 03:00 are one firing.
    assert local(got, BERLIN) == [
        "03-29 01:45+0100",
        "03-29 03:00+0200",
        "03-29 03:15+0200",
        "03-29 03:30+0200",
    ]
    assert got[1] - got[0] == timedelta(minutes=15)


def test_berlin_fall_back_fires_a_repeated_time_once() -> None:
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:00-02:59 happens twice.
    daily = Schedule.cron("30 2 * * *", BERLIN)
    got = firings(daily, utc(2026, 10, 24, 12), 2)
    assert got == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]  # the first 02:30
    half = Schedule.cron("*/30 * * * *", BERLIN)
    got = firings(half, utc(2026, 10, 24, 23, 10), 5)
    assert local(got, BERLIN) == [
        "10-25 01:30+0200",
        "10-25 02:00+0200",
        "10-25 02:30+0200",
        "10-25 03:00+0100",  # the second 02:00 and 02:30 (+01:00) do not fire again
        "10-25 03:30+0100",
    ]
    # Asked from inside the repeated hour's second pass, the next firing is after it.
    assert half.next_after(utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 25, 2, 0)


def test_new_york_changes_on_other_days_and_other_hours() -> None:
    # 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.
    daily = Schedule.cron("30 2 * * *", NEW_YORK)
    got = firings(daily, utc(2026, 3, 7, 12), 2)
    assert local(got, NEW_YORK) == ["03-08 03:00-0400", "03-09 02:30-0400"]
    early = Schedule.cron("30 1 * * *", NEW_YORK)
    got = firings(early, utc(2026, 10, 31, 12), 2)
    assert local(got, NEW_YORK) == ["11-01 01:30-0400", "11-02 01:30-0500"]  # once
    # On Berlin's change day New York's clock does not change.
    got = firings(daily, utc(2026, 3, 28, 12), 2)
    assert local(got, NEW_YORK) == ["03-29 02:30-0400", "03-30 02:30-0400"]


def test_every_keeps_to_its_grid() -> None:
    anchor = utc(2026, 1, 1, 0, 0, 0)
    every = Schedule.every(2000, anchor)
    assert every.next_after(utc(2025, 12, 31)) == anchor
    assert every.next_after(anchor) == anchor + timedelta(seconds=2)
    assert every.next_after(utc(2026, 1, 1, 0, 0, 3)) == utc(2026, 1, 1, 0, 0, 4)
    late = utc(2026, 1, 1, 0, 10, 1, 500_000)  # ten minutes of missed times later
    assert every.next_after(late) == utc(2026, 1, 1, 0, 10, 2)


def test_at_fires_once_even_when_past() -> None:
    at = Schedule.once(utc(2026, 6, 1, 12))
    assert at.next_after(utc(2026, 6, 1, 11)) == utc(2026, 6, 1, 12)
    assert at.next_after(utc(2026, 6, 1, 12)) is None
    assert at.first(utc(2026, 7, 1)) == utc(2026, 6, 1, 12)  # past: due at once
    assert Schedule.cron("0 0 * * *").first(utc(2026, 7, 1)) == utc(2026, 7, 2)


def test_active_hours_hold_heartbeats_to_a_local_window() -> None:
    day = ActiveHours.parse("08:00", "22:00", BERLIN)
    assert day.contains(utc(2026, 1, 5, 7, 0))  # 08:00 CET
    assert not day.contains(utc(2026, 1, 5, 21, 0))  # 22:00 CET
    assert day.next_open(utc(2026, 1, 5, 22)) == utc(2026, 1, 6, 7)
    night = ActiveHours.parse("22:00", "06:00")
    assert night.contains(utc(2026, 1, 5, 23)) and night.contains(utc(2026, 1, 5, 5))
    assert not night.contains(utc(2026, 1, 5, 12))
    assert ActiveHours.parse("18:00", "24:00").contains(utc(2026, 1, 5, 23, 59))
    every_hour = Schedule.every(3_600_000, utc(2026, 1, 1))
    assert next_in_window(every_hour, utc(2026, 1, 5, 21, 30), day) == utc(2026, 1, 6, 7)
    assert next_in_window(every_hour, utc(2026, 1, 5, 9, 30), day) == utc(2026, 1, 5, 10)
    for start, end in (("8:00", "22:00"), ("08:00", "25:00"), ("09:00", "09:00")):
        with pytest.raises(InvalidRequest) as refused:
            ActiveHours.parse(start, end)
        assert refused.value.info.details["param"] == "heartbeat.activeHours"


# --- missed times -----------------------------------------------------------------------------


def test_a_time_seen_late_fires_once_and_the_job_continues_from_now() -> None:
    every = Schedule.every(60_000, utc(2026, 1, 1))
    due = utc(2026, 1, 1, 10, 0)
    grace = timedelta(seconds=30)
    on_time = plan(every, due, due + timedelta(milliseconds=200), missed="skip", grace=grace)
    assert on_time == Plan(fire=True, next_run_at=utc(2026, 1, 1, 10, 1))
    # Down for an hour and a half: 90 times missed.
    back = utc(2026, 1, 1, 11, 30, 20)
    run_once = plan(every, due, back, missed="run_once", grace=grace)
    assert run_once == Plan(fire=True, next_run_at=utc(2026, 1, 1, 11, 31))  # once, no burst
    skip = plan(every, due, back, missed="skip", grace=grace)
    assert skip == Plan(fire=False, next_run_at=utc(2026, 1, 1, 11, 31))
    once = Schedule.once(due)
    assert plan(once, due, back, missed="run_once", grace=grace) == Plan(True, None)
    assert plan(once, due, back, missed="skip", grace=grace) == Plan(False, None)


def test_a_heartbeat_outside_its_active_hours_waits_for_them() -> None:
    every = Schedule.every(1_800_000, utc(2026, 1, 1))
    window = ActiveHours.parse("09:00", "17:00")
    grace = timedelta(seconds=30)
    evening = utc(2026, 1, 5, 17, 0)
    assert plan(every, evening, evening, missed="run_once", grace=grace, window=window) == Plan(
        fire=False, next_run_at=utc(2026, 1, 6, 9, 0)
    )
    noon = utc(2026, 1, 5, 12, 0)
    assert plan(every, noon, noon, missed="run_once", grace=grace, window=window) == Plan(
        fire=True, next_run_at=utc(2026, 1, 5, 12, 30)
    )
