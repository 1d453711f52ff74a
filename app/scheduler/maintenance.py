"""One replica runs each periodic maintenance job (a repository's garbage collection) per period.

Every replica runs the same loops; without a shared claim each would collect the same
repository once a period, reading every manifest and listing every chunk again (on S3, paid
requests). The claim is a compare-and-set on the job's row: the replica that moves its
``started_at`` forward runs it; the others learn when it started and wait a period from then.
A run that fails gives its claim back (:func:`claimed`), so the next tick of any replica tries
again; one whose process dies keeps it, and the job runs a period later.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.dialect import insert_ignoring_conflicts
from app.scheduler.models import MaintenanceRun


async def last_run(session: AsyncSession, name: str) -> datetime | None:
    """When the last run of ``name`` (by any replica) started; None if none did."""
    started = await session.execute(select(MaintenanceRun.started_at).where(MaintenanceRun.name == name))
    return started.scalar_one_or_none()


async def claim_run(
    session: AsyncSession, name: str, now: datetime, every: timedelta
) -> tuple[bool, datetime | None]:
    """Claim this period's run of ``name`` (due ``every`` after the last start). Returns whether
    this replica won it and, if it did, when the previous run started (to give the claim back),
    else when the run another replica claimed started."""
    table = cast(Table, MaintenanceRun.__table__)
    await insert_ignoring_conflicts(session, table, [{"name": name, "started_at": None}])
    previous = await last_run(session, name)
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
        return True, previous
    return False, await last_run(session, name)


async def _release_run(
    session: AsyncSession, name: str, claimed_at: datetime, previous: datetime | None
) -> None:
    """Give back a claim whose run failed: the row says ``previous`` again (unless another
    replica claimed a later run meanwhile), so the job is due at once."""
    await session.execute(
        update(MaintenanceRun)
        .where(MaintenanceRun.name == name, MaintenanceRun.started_at == claimed_at)
        .values(started_at=previous)
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class Claim:
    won: bool
    """This replica runs the job now."""
    other_started_at: datetime | None
    """When it lost: when the run another replica claimed started."""


@asynccontextmanager
async def claimed(
    sessionmaker: async_sessionmaker[AsyncSession], name: str, now: datetime, every: timedelta
) -> AsyncIterator[Claim]:
    """Claim this period's run of ``name`` for the block; a won claim whose block raises is given
    back (the error goes on), so the next tick of any replica tries again."""
    async with sessionmaker.begin() as session:
        won, seen = await claim_run(session, name, now, every)
    try:
        yield Claim(won, None if won else seen)
    except Exception:
        if won:
            async with sessionmaker.begin() as session:
                await _release_run(session, name, now, seen)
        raise
