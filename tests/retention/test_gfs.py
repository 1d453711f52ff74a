"""GFS selection (app.domain.retention) against expectations worked out by hand.

The expectations below are written out as dates, from calendars, not recomputed by any code.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.domain.retention import KeepReason, PointTime, RetentionCounts, prunable, select_keep

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(day: date, at: time = time(0, 30)) -> datetime:
    return datetime.combine(day, at, tzinfo=BERLIN).astimezone(UTC)


def label(instant: datetime) -> str:
    return instant.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M")


def hundred_days() -> list[PointTime[str]]:
    """One backup a day at 00:30 Berlin time, 2025-12-24 to 2026-04-02 (100 days, across the
    change to summer time on Sunday 2026-03-29), plus two extra backups: 2026-04-01 14:00 and
    2026-03-29 03:30 (summer time, an hour after the clocks jumped).

    00:30 is on the previous day in UTC, so bucketing by UTC days/weeks/months gives other results.
    """
    instants = [berlin(date(2025, 12, 24) + timedelta(days=n)) for n in range(100)]
    assert label(instants[-1]) == "2026-04-02 00:30"
    instants += [berlin(date(2026, 4, 1), time(14, 0)), berlin(date(2026, 3, 29), time(3, 30))]
    return [PointTime(label(i), i) for i in instants]


def test_hundred_days_daily7_weekly4_monthly3_in_berlin_across_dst() -> None:
    points = hundred_days()
    assert len(points) == 102
    keep = select_keep(points, RetentionCounts(daily=7, weekly=4, monthly=3), BERLIN)

    # Worked out by hand (calendar: 2026-03-29, 22, 15, 8 and 1 are Sundays; ISO weeks run
    # Monday to Sunday):
    # daily, newest point of the 7 newest days: 04-02; 04-01 (the 14:00 one; 00:30 removed);
    #   03-31; 03-30; 03-29 (the 03:30 one; 00:30 removed); 03-28; 03-27.
    # weekly: weeks Mar 30-Apr 5 and Mar 23-29 already hold daily points, so they are skipped
    #   (03-26..03-23 are passed over) and the 4 next weeks give their Sundays: 03-22, 03-15,
    #   03-08, 03-01 (week Feb 23 - Mar 1). The older points of those weeks are decided by the
    #   weekly rule (removed), including 02-28..02-23, which share a week with 03-01.
    # monthly: April and March already hold kept points; next: February, whose newest point
    #   still undecided is 02-22 (not 02-28, see above), January (01-31), December (12-31).
    expected = {
        "2026-04-02 00:30": KeepReason.DAILY,
        "2026-04-01 14:00": KeepReason.DAILY,
        "2026-03-31 00:30": KeepReason.DAILY,
        "2026-03-30 00:30": KeepReason.DAILY,
        "2026-03-29 03:30": KeepReason.DAILY,
        "2026-03-28 00:30": KeepReason.DAILY,
        "2026-03-27 00:30": KeepReason.DAILY,
        "2026-03-22 00:30": KeepReason.WEEKLY,
        "2026-03-15 00:30": KeepReason.WEEKLY,
        "2026-03-08 00:30": KeepReason.WEEKLY,
        "2026-03-01 00:30": KeepReason.WEEKLY,
        "2026-02-22 00:30": KeepReason.MONTHLY,
        "2026-01-31 00:30": KeepReason.MONTHLY,
        "2025-12-31 00:30": KeepReason.MONTHLY,
    }
    assert keep == expected
    pruned = prunable(points, keep)
    assert len(pruned) == 88
    assert pruned[0] == "2025-12-24 00:30"  # oldest first
    assert "2026-04-01 00:30" in pruned and "2026-03-29 00:30" in pruned

    # Pruning what was kept again removes nothing (a VM without new backups keeps its points).
    survivors = [p for p in points if p.id in keep]
    assert select_keep(survivors, RetentionCounts(daily=7, weekly=4, monthly=3), BERLIN) == expected


def test_the_timezone_decides_the_buckets() -> None:
    # The same instants bucketed in UTC: 2026-04-02 00:30 Berlin is 2026-04-01 22:30 UTC, the same
    # UTC day as 2026-04-01 14:00 Berlin, so the daily rule picks different points.
    keep = select_keep(hundred_days(), RetentionCounts(daily=7, weekly=4, monthly=3), ZoneInfo("UTC"))
    assert "2026-04-01 14:00" not in keep
    assert keep["2026-04-02 00:30"] is KeepReason.DAILY


def test_iso_weeks_cross_the_new_year() -> None:
    # 2025-12-28 is a Sunday (ISO 2025-W52); 2025-12-31 and 2026-01-03 are in ISO week 2026-W01.
    points = [
        PointTime(d.isoformat(), berlin(d, time(22, 0)))
        for d in (date(2025, 12, 28), date(2025, 12, 31), date(2026, 1, 3))
    ]
    keep = select_keep(points, RetentionCounts(daily=1, weekly=2), BERLIN)
    assert keep == {"2026-01-03": KeepReason.DAILY, "2025-12-28": KeepReason.WEEKLY}


def days(n: int) -> list[PointTime[str]]:
    """One point a day at 22:00 Berlin, newest first: d0 is 2026-06-30, d1 the day before, …"""
    return [PointTime(f"d{i}", berlin(date(2026, 6, 30) - timedelta(days=i), time(22, 0))) for i in range(n)]


def test_in_use_points_are_kept_and_count_for_no_rule() -> None:
    points = days(5)
    assert select_keep(points, RetentionCounts(daily=2), BERLIN) == {
        "d0": KeepReason.DAILY,
        "d1": KeepReason.DAILY,
    }
    # An old point that a restore reads is kept besides the rules' choice.
    assert select_keep(points, RetentionCounts(daily=2), BERLIN, in_use={"d4"}) == {
        "d0": KeepReason.DAILY,
        "d1": KeepReason.DAILY,
        "d4": KeepReason.IN_USE,
    }
    # Like PBS's protected snapshots, an in-use point does not count: two other days are kept.
    assert select_keep(points, RetentionCounts(daily=2), BERLIN, in_use={"d0"}) == {
        "d0": KeepReason.IN_USE,
        "d1": KeepReason.DAILY,
        "d2": KeepReason.DAILY,
    }


def test_days_without_backups_do_not_count() -> None:
    # Points on 06-30, 06-20 and 06-10 only: keep-daily 2 keeps the two newest *days that have
    # points*, however far apart.
    points = [p for i, p in enumerate(days(21)) if i % 10 == 0]
    assert select_keep(points, RetentionCounts(daily=2), BERLIN) == {
        "d0": KeepReason.DAILY,
        "d10": KeepReason.DAILY,
    }


def test_no_retention_keeps_everything_and_empty_is_empty() -> None:
    assert select_keep(days(3), RetentionCounts(), BERLIN) == dict.fromkeys(
        ("d0", "d1", "d2"), KeepReason.KEEP_ALL
    )
    assert select_keep([], RetentionCounts(daily=1), BERLIN) == {}
    with pytest.raises(ValueError, match="negative"):
        RetentionCounts(daily=-1)
    with pytest.raises(ValueError, match="naive"):
        select_keep([PointTime("x", datetime(2026, 1, 1))], RetentionCounts(daily=1), BERLIN)


def test_never_the_latest_and_stable_under_repetition() -> None:
    rng = random.Random(7)
    start = datetime(2025, 10, 1, tzinfo=UTC)
    for _ in range(300):
        points = [
            PointTime(f"p{i}", start + timedelta(minutes=rng.randrange(0, 200 * 24 * 60)))
            for i in range(rng.randrange(1, 60))
        ]
        counts = RetentionCounts(rng.randrange(0, 4), rng.randrange(0, 3), rng.randrange(0, 3))
        in_use = {p.id for p in points if rng.random() < 0.05}
        keep = select_keep(points, counts, BERLIN, in_use=in_use)
        latest = max(points, key=lambda p: p.created_at)
        assert latest.id in keep
        assert in_use <= keep.keys()
        assert len(keep) <= max(counts.daily + counts.weekly + counts.monthly, 1) + len(in_use) or (
            not counts.keeps_something
        )
        survivors = [p for p in points if p.id in keep]
        assert select_keep(survivors, counts, BERLIN, in_use=in_use).keys() == keep.keys()
