"""One replica runs each periodic maintenance job (a repository's garbage collection) per period.

Every replica runs the same loops; without a shared claim each would collect the same
repository once a period, reading every manifest and listing every chunk again (on S3, paid
requests). The claim is a compare-and-set on the job's row: the replica that moves its
``started_at`` forward runs it; the others learn when it started and wait a period from then.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.dialect import insert_ignoring_conflicts
from app.scheduler.models import MaintenanceRun


async def claim_run(session: AsyncSession, name: str, now: datetime, every: timedelta) -> datetime | None:
    """Claim this period's run of ``name`` (due ``every`` after the last start): None when this
    replica won it, else when the run that another replica claimed started."""
    table = cast(Table, MaintenanceRun.__table__)
    await insert_ignoring_conflicts(session, table, [{"name": name, "started_at": None}])
    won = await session.execute(
        update(MaintenanceRun)
        .where(
            MaintenanceRun.name == name,
            or_(MaintenanceRun.started_at.is_(None), MaintenanceRun.started_at <= now - every),
        )
        .values(started_at=now)
        .returning(MaintenanceRun.name)
        .execution_options(synchronize_session=False)
    )
    if won.first() is not None:
        return None
    started = await session.execute(select(MaintenanceRun.started_at).where(MaintenanceRun.name == name))
    return started.scalar_one()
