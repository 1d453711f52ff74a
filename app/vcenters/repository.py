"""All SQL about registered vCenters."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.paging import fetch_page
from app.pagination import PageRequest
from app.vcenters.models import VCenter


class VCenterRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, vcenter_id: uuid.UUID, scope: uuid.UUID | None) -> VCenter | None:
        stmt = select(VCenter).where(VCenter.id == vcenter_id)
        if scope is not None:
            stmt = stmt.where(VCenter.tenant_id == scope)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_by_name(self, tenant_id: uuid.UUID, name: str) -> VCenter | None:
        stmt = select(VCenter).where(VCenter.tenant_id == tenant_id, VCenter.name == name)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list_page(
        self,
        scope: uuid.UUID | None,
        page: PageRequest,
        tenant_id: uuid.UUID | None,
        connection_status: str | None,
    ) -> tuple[list[VCenter], int]:
        stmt = select(VCenter)
        if scope is not None:
            stmt = stmt.where(VCenter.tenant_id == scope)
        if tenant_id is not None:
            stmt = stmt.where(VCenter.tenant_id == tenant_id)
        if connection_status is not None:
            stmt = stmt.where(VCenter.connection_status == connection_status)
        return await fetch_page(self.session, stmt, (VCenter.name, VCenter.id), page)

    async def add(self, vcenter: VCenter) -> None:
        self.session.add(vcenter)
        await self.session.flush()

    async def delete(self, vcenter: VCenter) -> None:
        await self.session.delete(vcenter)
        await self.session.flush()

    async def due_for_sync(self, synced_before: datetime, now: datetime) -> list[uuid.UUID]:
        stmt = (
            select(VCenter.id)
            .where(or_(VCenter.last_sync_at.is_(None), VCenter.last_sync_at < synced_before))
            .where(or_(VCenter.sync_claimed_until.is_(None), VCenter.sync_claimed_until < now))
            .order_by(VCenter.last_sync_at.nulls_first(), VCenter.id)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def claim_sync(self, vcenter_id: uuid.UUID, now: datetime, until: datetime) -> bool:
        """Compare-and-set: only one replica syncs a vCenter at a time; zero rows = lost."""
        result = await self.session.execute(
            update(VCenter)
            .where(VCenter.id == vcenter_id)
            .where(or_(VCenter.sync_claimed_until.is_(None), VCenter.sync_claimed_until < now))
            .values(sync_claimed_until=until)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)
