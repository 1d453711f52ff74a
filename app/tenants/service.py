"""Rules about tenants. Flushes, never commits (the request scope commits)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.clock import Clock
from app.errors import Conflict, NotFound
from app.pagination import PageRequest
from app.tenants.models import Tenant
from app.tenants.repository import TenantRepository
from app.tenants.schemas import TenantCreate, TenantUpdate


class TenantService:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.repo = TenantRepository(session)
        self.clock = clock

    async def get(self, principal: Principal, tenant_id: uuid.UUID) -> Tenant:
        tenant = await self.repo.get(tenant_id, principal.tenant_scope)
        if tenant is None:
            raise NotFound(f"Tenant {tenant_id} does not exist.")
        return tenant

    async def list_page(
        self, principal: Principal, page: PageRequest, name_contains: str | None = None
    ) -> tuple[list[Tenant], int]:
        return await self.repo.list_page(principal.tenant_scope, page, name_contains)

    async def create(self, principal: Principal, data: TenantCreate) -> Tenant:
        principal.require_operator("create tenants")
        await self._ensure_name_free(data.name)
        now = self.clock.now()
        tenant = Tenant(
            id=uuid.uuid4(),
            name=data.name,
            restore_approval_required=data.restore_approval_required,
            created_at=now,
            updated_at=now,
        )
        await self.repo.add(tenant)
        return tenant

    async def update(self, principal: Principal, tenant_id: uuid.UUID, data: TenantUpdate) -> Tenant:
        principal.require_operator("change tenants")
        tenant = await self.get(principal, tenant_id)
        if data.name is not None and data.name != tenant.name:
            await self._ensure_name_free(data.name)
            tenant.name = data.name
            tenant.updated_at = self.clock.now()
        if data.restore_approval_required is not None:
            tenant.restore_approval_required = data.restore_approval_required
            tenant.updated_at = self.clock.now()
        return tenant

    async def delete(self, principal: Principal, tenant_id: uuid.UUID) -> None:
        principal.require_operator("delete tenants")
        tenant = await self.get(principal, tenant_id)
        owned = {label: n for label, n in (await self.repo.count_owned(tenant.id)).items() if n}
        if owned:
            listing = ", ".join(f"{n} {label}" for label, n in owned.items())
            raise Conflict(
                f"Tenant '{tenant.name}' still owns {listing}; delete or revoke them first.",
                owned=owned,
            )
        await self.repo.delete(tenant)

    async def _ensure_name_free(self, name: str) -> None:
        if await self.repo.get_by_name(name) is not None:
            raise Conflict(f"A tenant named '{name}' already exists; choose another name.")
