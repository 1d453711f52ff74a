"""Which restore points of one VM a policy's retention keeps (grandfather-father-son).

The selection is Proxmox Backup Server's prune (``pbs-datastore/src/prune.rs``,
``compute_prune_info``/``mark_selections``; documented under "Pruning" in PBS's
``docs/maintenance.rst``), with daily, weekly and monthly rules:

- Points are taken newest first. The rules run in the order daily, weekly, monthly; each rule
  puts every point into a bucket (daily: the calendar day, weekly: the ISO week, Monday to
  Sunday, with its ISO year; monthly: the calendar month), all *in the policy's timezone*.
- A rule keeps the newest point of each of its ``N`` newest buckets *that have points*: a VM
  not backed up for a week still keeps 7 daily points, and a VM that no longer gets backups
  keeps what it has (pruning a set that gains no points twice removes nothing the second time).
- "The next option does not take care of already covered backups. It will only consider older
  backups": a bucket that already holds a point kept by an earlier (finer) rule is skipped and
  does not count towards the coarser rule's ``N``. So daily=7, weekly=4 keeps the newest point
  of the 4 weeks *before* the weeks the 7 daily points fall in, not 4 weeks counted from now.
- Points a rule passed over inside a bucket it kept (older points of the same day for the
  daily rule) are decided by that rule (removed) and are not candidates for coarser rules. So
  when a weekly point is a Sunday 1 March, the days of February in its ISO week are gone too,
  and February's monthly point is its newest point *before* that week (22 February).
- Points in use (a restore that is requested or running reads them) are kept and, like PBS's
  *protected* snapshots, count for no rule: the rules select among the other points as if the
  in-use ones were not there, so a running restore never changes what is kept for good.
- The VM's latest point is never pruned. The rules always keep it when any count is positive
  (it is the newest point of the newest bucket); ``latest`` only appears as a reason when the
  latest point is otherwise unselected.
- All counts zero keeps everything (PBS: retention that "keeps nothing" is no retention); the
  policy schema refuses it anyway.

Buckets are computed from each instant converted with ``zoneinfo`` to the policy's timezone,
so a point at 00:30 in Berlin belongs to that Berlin day, on both sides of a DST change.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar
from zoneinfo import ZoneInfo

Id = TypeVar("Id", bound=Hashable)


class KeepReason(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    LATEST = "latest"
    IN_USE = "in-use"
    KEEP_ALL = "keep-all"  # the retention keeps nothing, which means no retention


@dataclass(frozen=True)
class RetentionCounts:
    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    def __post_init__(self) -> None:
        if min(self.daily, self.weekly, self.monthly) < 0:
            raise ValueError("retention counts must not be negative")

    @property
    def keeps_something(self) -> bool:
        return self.daily + self.weekly + self.monthly > 0


@dataclass(frozen=True)
class PointTime(Generic[Id]):
    """A restore point as retention sees it: an id and the instant it captured (aware)."""

    id: Id
    created_at: datetime


def day_bucket(local: datetime) -> str:
    return local.strftime("%Y-%m-%d")


def week_bucket(local: datetime) -> str:
    year, week, _ = local.isocalendar()
    return f"{year}-W{week:02d}"


def month_bucket(local: datetime) -> str:
    return local.strftime("%Y-%m")


def newest_first(points: Iterable[PointTime[Id]]) -> list[PointTime[Id]]:
    """Newest first; among equal instants the smallest id first (the catalog's "latest" order)."""
    by_id = sorted(points, key=lambda p: str(p.id))
    return sorted(by_id, key=lambda p: p.created_at, reverse=True)


def select_keep(
    points: Iterable[PointTime[Id]],
    counts: RetentionCounts,
    tz: ZoneInfo,
    in_use: Collection[Id] = (),
) -> dict[Id, KeepReason]:
    """The points to keep, each with why; every other point of ``points`` may be pruned."""
    ordered = newest_first(points)
    for point in ordered:
        if point.created_at.tzinfo is None:
            raise ValueError(f"restore point {point.id!r} has a naive created_at")
    if not ordered:
        return {}
    if not counts.keeps_something:
        return {p.id: KeepReason.KEEP_ALL for p in ordered}

    keep: dict[Id, KeepReason] = {p.id: KeepReason.IN_USE for p in ordered if p.id in in_use}
    removed: set[Id] = set()
    local = {p.id: p.created_at.astimezone(tz) for p in ordered}
    rules: list[tuple[KeepReason, int, Callable[[datetime], str]]] = [
        (KeepReason.DAILY, counts.daily, day_bucket),
        (KeepReason.WEEKLY, counts.weekly, week_bucket),
        (KeepReason.MONTHLY, counts.monthly, month_bucket),
    ]
    for reason, count, bucket_of in rules:
        _mark(ordered, local, keep, removed, reason, count, bucket_of)

    latest = ordered[0].id
    keep.setdefault(latest, KeepReason.LATEST)
    return keep


def _mark(
    ordered: list[PointTime[Id]],
    local: dict[Id, datetime],
    keep: dict[Id, KeepReason],
    removed: set[Id],
    reason: KeepReason,
    count: int,
    bucket_of: Callable[[datetime], str],
) -> None:
    """One rule, as PBS's ``mark_selections``."""
    covered = {bucket_of(local[p.id]) for p in ordered if keep.get(p.id) not in (None, KeepReason.IN_USE)}
    selected: set[str] = set()
    for point in ordered:
        if point.id in keep or point.id in removed:
            continue
        bucket = bucket_of(local[point.id])
        if bucket in covered:
            continue
        if bucket not in selected:
            if len(selected) >= count:
                break
            selected.add(bucket)
            keep[point.id] = reason
        else:
            removed.add(point.id)


def prunable(points: Iterable[PointTime[Id]], keep: Collection[Id]) -> list[Id]:
    """Ids of ``points`` not in ``keep``, oldest first (the order to delete them in)."""
    return [p.id for p in reversed(newest_first(points)) if p.id not in keep]
