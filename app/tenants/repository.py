"""All SQL about tenants."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import ApiKey
from app.db.paging import fetch_page
from app.pagination import PageRequest
from app.policies.models import Policy
from app.tenants.models import Tenant
from app.vcenters.models import VCenter


class TenantRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, tenant_id: uuid.UUID, scope: uuid.UUID | None) -> Tenant | None:
        stmt = select(Tenant).where(Tenant.id == tenant_id)
        if scope is not None:
            stmt = stmt.where(Tenant.id == scope)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_by_name(self, name: str) -> Tenant | None:
        return (await self.session.execute(select(Tenant).where(Tenant.name == name))).scalar_one_or_none()

    async def list_page(
        self, scope: uuid.UUID | None, page: PageRequest, name_contains: str | None
    ) -> tuple[list[Tenant], int]:
        stmt = select(Tenant)
        if scope is not None:
            stmt = stmt.where(Tenant.id == scope)
        if name_contains:
            stmt = stmt.where(Tenant.name.icontains(name_contains, autoescape=True))
        return await fetch_page(self.session, stmt, (Tenant.name, Tenant.id), page)

    async def add(self, tenant: Tenant) -> None:
        self.session.add(tenant)
        await self.session.flush()

    async def delete(self, tenant: Tenant) -> None:
        # Revoked keys are history of a tenant that is going away; they go with it.
        await self.session.execute(
            delete(ApiKey).where(ApiKey.tenant_id == tenant.id, ApiKey.revoked_at.is_not(None))
        )
        await self.session.delete(tenant)
        await self.session.flush()

    async def count_owned(self, tenant_id: uuid.UUID) -> dict[str, int]:
        """What still belongs to a tenant; a tenant is deletable only when all are zero."""
        counts: dict[str, int] = {}
        for label, stmt in (
            ("vCenters", select(func.count()).where(VCenter.tenant_id == tenant_id)),
            ("policies", select(func.count()).where(Policy.tenant_id == tenant_id)),
            (
                "active API keys",
                select(func.count()).where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None)),
            ),
        ):
            counts[label] = (await self.session.execute(stmt)).scalar_one()
        return counts
