"""Datastore free-space rules.

A VM's datastores need at least 15% free: below that the VM is flagged (``warning``); below
10% its backups do not start (``critical``), because a snapshot's delta disk on a nearly full
datastore can stop every VM on it.
"""

from __future__ import annotations

from enum import StrEnum

WARNING_BELOW_PERCENT = 15.0
CRITICAL_BELOW_PERCENT = 10.0


class SpaceStatus(StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"


def free_percent(capacity_bytes: int, free_bytes: int) -> float:
    if capacity_bytes <= 0:
        return 0.0
    return round(100.0 * max(free_bytes, 0) / capacity_bytes, 2)


def space_status(capacity_bytes: int, free_bytes: int) -> SpaceStatus:
    # Compare exact integers rather than the rounded percentage, so 9.999% is critical.
    if capacity_bytes <= 0 or free_bytes * 100 < capacity_bytes * CRITICAL_BELOW_PERCENT:
        return SpaceStatus.CRITICAL
    if free_bytes * 100 < capacity_bytes * WARNING_BELOW_PERCENT:
        return SpaceStatus.WARNING
    return SpaceStatus.OK
