"""Schedule arithmetic across DST changes (pure functions, hand-computed expectations)."""

from __future__ import annotations

from datetime import UTC, datetime, time

from app.domain.schedule import CronSchedule, WeeklySchedule, load_timezone, window_end_for

BERLIN = load_timezone("Europe/Berlin")
DAILY_2230 = WeeklySchedule(times=(time(22, 30),), days=("mon", "tue", "wed", "thu", "fri", "sat", "sun"))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_wall_clock_time_is_kept_across_spring_forward_and_fall_back() -> None:
    # 22:30 in Berlin is 21:30 UTC in winter (CET) and 20:30 UTC in summer (CEST).
    assert DAILY_2230.next_after(utc(2026, 3, 28, 12), BERLIN) == utc(2026, 3, 28, 21, 30)
    assert DAILY_2230.next_after(utc(2026, 3, 29, 12), BERLIN) == utc(2026, 3, 29, 20, 30)
    assert DAILY_2230.next_after(utc(2026, 10, 24, 12), BERLIN) == utc(2026, 10, 24, 20, 30)
    assert DAILY_2230.next_after(utc(2026, 10, 25, 12), BERLIN) == utc(2026, 10, 25, 21, 30)


def test_a_time_inside_the_spring_gap_runs_once_at_the_end_of_the_gap() -> None:
    schedule = WeeklySchedule(times=(time(2, 30),), days=("sun",))
    # 29 March 2026: 02:00-03:00 does not exist in Berlin; run at 03:00 CEST = 01:00 UTC.
    assert schedule.next_after(utc(2026, 3, 28, 12), BERLIN) == utc(2026, 3, 29, 1, 0)


def test_a_time_that_happens_twice_at_fall_back_runs_once() -> None:
    schedule = WeeklySchedule(times=(time(2, 30),), days=("sun",))
    first = schedule.next_after(utc(2026, 10, 24, 12), BERLIN)
    assert first == utc(2026, 10, 25, 0, 30)  # the first 02:30 (CEST)
    assert schedule.next_after(first, BERLIN) == utc(2026, 11, 1, 1, 30)  # next week, not an hour later


def test_latest_slot_is_the_last_run_not_after_now() -> None:
    assert DAILY_2230.latest_at_or_before(utc(2026, 3, 30, 8), BERLIN) == utc(2026, 3, 29, 20, 30)
    assert DAILY_2230.latest_at_or_before(utc(2026, 3, 29, 20, 30), BERLIN) == utc(2026, 3, 29, 20, 30)
    weekdays = WeeklySchedule(times=(time(1, 0),), days=("mon",))
    assert weekdays.latest_at_or_before(utc(2026, 11, 29, 12), BERLIN) == utc(2026, 11, 23, 0, 0)
    cron = CronSchedule("0 22 * * 1-5")
    assert cron.latest_at_or_before(utc(2026, 11, 29, 12), BERLIN) == utc(2026, 11, 27, 21, 0)  # Friday
    assert cron.latest_at_or_before(utc(2026, 11, 27, 21, 0), BERLIN) == utc(2026, 11, 27, 21, 0)


def test_window_end_of_a_window_that_wraps_midnight() -> None:
    start, eight_hours = time(22, 0), 480
    # A slot at 23:00 Berlin (winter) is in the window 22:00-06:00: it ends 05:00 UTC.
    assert window_end_for(utc(2026, 11, 25, 22, 0), start, eight_hours, BERLIN) == utc(2026, 11, 26, 5, 0)
    # A slot at 01:00 the next morning belongs to the window that started the evening before.
    assert window_end_for(utc(2026, 11, 26, 0, 0), start, eight_hours, BERLIN) == utc(2026, 11, 26, 5, 0)
    # Outside every window (possible with cron): a window of the same length from the slot.
    assert window_end_for(utc(2026, 11, 26, 11, 0), start, eight_hours, BERLIN) == utc(2026, 11, 26, 19, 0)
