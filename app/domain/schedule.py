"""Policy schedules: weekly times or a cron expression, in an IANA timezone.

Times are wall-clock times in the policy's timezone, so that "22:00" stays 22:00 across DST
changes. A time that does not exist on a spring-forward day runs at the first instant after
the gap; a time that exists twice on a fall-back day runs once, at its first occurrence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ScheduleError(ValueError):
    pass


def load_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        # OSError: a name that is a folder of the tz database ("Europe") or unreadable there.
        raise ScheduleError(f"unknown IANA timezone '{name}' (e.g. 'Europe/Berlin', 'UTC')") from exc


def parse_hhmm(value: str) -> time:
    try:
        hours, minutes = value.split(":")
        if len(hours) != 2 or len(minutes) != 2:
            raise ValueError
        return time(int(hours), int(minutes))
    except ValueError as exc:
        raise ScheduleError(f"'{value}' is not a time of day in HH:MM (00:00-23:59)") from exc


def validate_cron(expression: str) -> None:
    try:
        CronSim(expression, datetime(2026, 1, 1))
    except CronSimError as exc:
        raise ScheduleError(f"invalid cron expression '{expression}': {exc}") from exc


def localize(day: date, at: time, tz: ZoneInfo) -> datetime:
    """Wall-clock ``day at`` in ``tz`` as an aware instant.

    A time that does not exist (in a spring-forward gap) becomes the first instant after the
    gap; a time that exists twice (fall back) is its first occurrence (``fold=0``).
    """
    naive = datetime.combine(day, at)
    candidate = naive.replace(tzinfo=tz, fold=0)
    if candidate.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive:
        return candidate
    # In the gap: walk from the earlier reading to the first minute whose wall time is
    # past the requested one (gaps are minutes to a couple of hours long).
    instant = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    latest = candidate.astimezone(UTC)
    while instant < latest and instant.astimezone(tz).replace(tzinfo=None) < naive:
        instant += timedelta(minutes=1)
    return instant.astimezone(tz)


@dataclass(frozen=True)
class WeeklySchedule:
    times: tuple[time, ...]
    days: tuple[str, ...]

    def latest_at_or_before(self, at: datetime, tz: ZoneInfo) -> datetime | None:
        """The most recent run time not later than ``at`` (None if none in the last 8 days)."""
        local = at.astimezone(tz)
        for offset in range(0, 9):
            day = local.date() - timedelta(days=offset)
            if WEEKDAYS[day.weekday()] not in self.days:
                continue
            for run_at in sorted(self.times, reverse=True):
                candidate = localize(day, run_at, tz)
                if candidate <= at:
                    return candidate.astimezone(UTC)
        return None

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime:
        local = after.astimezone(tz)
        for offset in range(0, 9):
            day = local.date() + timedelta(days=offset)
            if WEEKDAYS[day.weekday()] not in self.days:
                continue
            for at in sorted(self.times):
                candidate = localize(day, at, tz)
                if candidate > after:
                    return candidate.astimezone(UTC)
        raise ScheduleError("the schedule has no day to run on")


@dataclass(frozen=True)
class CronSchedule:
    expression: str

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime:
        local = after.astimezone(tz)
        return next(CronSim(self.expression, local)).astimezone(UTC)

    def latest_at_or_before(self, at: datetime, tz: ZoneInfo) -> datetime | None:
        local = at.astimezone(tz)
        # cronsim's reverse iteration starts strictly before its start instant.
        for candidate in CronSim(self.expression, local + timedelta(seconds=1), reverse=True):
            return candidate.astimezone(UTC)
        return None


def time_in_window(at: time, window_start: time, window_minutes: int) -> bool:
    """Whether a wall-clock time falls in a window that may wrap past midnight."""
    start = window_start.hour * 60 + window_start.minute
    minute = at.hour * 60 + at.minute
    return (minute - start) % (24 * 60) < window_minutes or window_minutes >= 24 * 60


def times_outside_window(times: Sequence[time], window_start: time, window_minutes: int) -> list[time]:
    return [t for t in times if not time_in_window(t, window_start, window_minutes)]


Schedule = WeeklySchedule | CronSchedule


def window_end_for(slot: datetime, window_start: time, window_minutes: int, tz: ZoneInfo) -> datetime:
    """End of the backup window a run at ``slot`` belongs to.

    The window occurrence that contains the slot (windows may wrap past midnight); a slot
    outside every window (possible with cron schedules) gets a window of the same length
    starting at the slot.
    """
    local = slot.astimezone(tz)
    length = timedelta(minutes=window_minutes)
    for offset in (0, 1):
        start = localize(local.date() - timedelta(days=offset), window_start, tz)
        if start <= slot < start + length:
            return (start + length).astimezone(UTC)
    return (slot + length).astimezone(UTC)
