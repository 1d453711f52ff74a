"""All SQL about restores."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.dialect import lock_for_decision
from app.db.paging import fetch_page
from app.domain.jobs import ACTIVE_RESTORE_STATES
from app.jobs.models import Job
from app.pagination import PageRequest
from app.restores.models import Restore


class RestoreRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, restore: Restore) -> None:
        self.session.add(restore)
        await self.session.flush()

    async def get(self, restore_id: uuid.UUID, scope: uuid.UUID | None = None) -> Restore | None:
        stmt = select(Restore).where(Restore.id == restore_id)
        if scope is not None:
            stmt = stmt.where(Restore.tenant_id == scope)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_for_update(self, restore_id: uuid.UUID) -> Restore | None:
        """Locked (PostgreSQL) and read afresh, for a decision on it: two operators approving or
        rejecting at once take turns, and the second sees the first's outcome."""
        stmt = lock_for_decision(select(Restore).where(Restore.id == restore_id), self.session)
        stmt = stmt.execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list_page(
        self, scope: uuid.UUID | None, vm_id: uuid.UUID | None, state: str | None, page: PageRequest
    ) -> tuple[list[Restore], int]:
        stmt = select(Restore)
        for column, value in ((Restore.tenant_id, scope), (Restore.vm_id, vm_id), (Restore.state, state)):
            if value is not None:
                stmt = stmt.where(column == value)
        return await fetch_page(self.session, stmt, (Restore.requested_at.desc(), Restore.id), page)

    async def mark_initiated(self, restore_ids: list[uuid.UUID], state: str, now: datetime) -> None:
        """Work started on a proxy: the moment the initiation clock stops (kept from a first attempt)."""
        if not restore_ids:
            return
        await self.session.execute(
            update(Restore)
            .where(Restore.id.in_(restore_ids))
            .values(state=state, initiated_at=func.coalesce(Restore.initiated_at, now))
            .execution_options(synchronize_session=False)
        )

    async def jobs_for(self, restore_ids: list[uuid.UUID]) -> dict[uuid.UUID, Job]:
        if not restore_ids:
            return {}
        rows = await self.session.execute(select(Job).where(Job.restore_id.in_(restore_ids)))
        return {job.restore_id: job for job in rows.scalars() if job.restore_id is not None}

    async def active_list_for_vm(self, vm_id: uuid.UUID) -> list[Restore]:
        stmt = select(Restore).where(Restore.vm_id == vm_id, Restore.state.in_(ACTIVE_RESTORE_STATES))
        return list((await self.session.execute(stmt)).scalars())

    async def active_for_vm(self, vm_id: uuid.UUID) -> Restore | None:
        stmt = select(Restore).where(Restore.vm_id == vm_id, Restore.state.in_(ACTIVE_RESTORE_STATES))
        return (await self.session.execute(stmt.limit(1))).scalar_one_or_none()

    async def disks_rewritten_since(self, vm_id: uuid.UUID, since: datetime) -> bool:
        """Whether a restore over this VM wrote its disks at or after ``since``, or may still.

        Such a restore writes the disk files through the datastore, which Changed Block Tracking
        does not see: the changes since a backup before it would miss every restored block."""
        stmt = select(Restore.id).where(
            Restore.vm_id == vm_id,
            Restore.type == "vm",
            Restore.target == "original",
            Restore.initiated_at.is_not(None),
            or_(Restore.completed_at.is_(None), Restore.completed_at >= since),
        )
        return (await self.session.execute(stmt.limit(1))).first() is not None
