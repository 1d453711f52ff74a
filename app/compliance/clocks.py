"""A restore's SLA clocks from its catalog row: one reading for the recorder, the reports and the
outbound events."""

from __future__ import annotations

from datetime import datetime

from app.domain.compliance import DEFAULT_RTO_HOURS, RestoreClocks, restore_clocks
from app.restores.models import Restore


def clocks_of(restore: Restore, rto_hours: int | None, now: datetime) -> RestoreClocks:
    """Both clocks as of ``now``; ``rto_hours`` None: the default RTO."""
    return restore_clocks(
        requested_at=restore.requested_at,
        initiated_at=restore.initiated_at,
        completed_at=restore.completed_at,
        state=restore.state,
        source_location=restore.source_location,
        rto_hours=rto_hours if rto_hours is not None else DEFAULT_RTO_HOURS,
        now=now,
    )
