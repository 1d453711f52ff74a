"""All SQL about policies."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.dialect import lock_for_decision
from app.db.paging import fetch_page
from app.inventory.models import VirtualMachine
from app.pagination import PageRequest
from app.policies.models import Policy


class PolicyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, policy_id: uuid.UUID, scope: uuid.UUID | None) -> Policy | None:
        stmt = select(Policy).where(Policy.id == policy_id)
        if scope is not None:
            stmt = stmt.where(Policy.tenant_id == scope)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_for_update(self, policy_id: uuid.UUID) -> Policy | None:
        """Locked (PostgreSQL) and read afresh, for a change computed from its current value (a
        VM added to its selection): two such changes take turns, the second sees the first."""
        stmt = lock_for_decision(select(Policy).where(Policy.id == policy_id), self.session)
        return (
            await self.session.execute(stmt.execution_options(populate_existing=True))
        ).scalar_one_or_none()

    async def get_by_name(self, tenant_id: uuid.UUID, name: str) -> Policy | None:
        stmt = select(Policy).where(Policy.tenant_id == tenant_id, Policy.name == name)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list_page(
        self,
        scope: uuid.UUID | None,
        page: PageRequest,
        tenant_id: uuid.UUID | None,
        enabled: bool | None,
        name_contains: str | None,
    ) -> tuple[list[Policy], int]:
        stmt = select(Policy)
        if scope is not None:
            stmt = stmt.where(Policy.tenant_id == scope)
        if tenant_id is not None:
            stmt = stmt.where(Policy.tenant_id == tenant_id)
        if enabled is not None:
            stmt = stmt.where(Policy.enabled == enabled)
        if name_contains:
            stmt = stmt.where(Policy.name.icontains(name_contains, autoescape=True))
        return await fetch_page(self.session, stmt, (Policy.name, Policy.id), page)

    async def for_tenant(self, tenant_id: uuid.UUID) -> list[Policy]:
        rows = await self.session.execute(
            select(Policy).where(Policy.tenant_id == tenant_id).order_by(Policy.name, Policy.id)
        )
        return list(rows.scalars())

    async def add(self, policy: Policy) -> None:
        self.session.add(policy)
        await self.session.flush()

    async def delete(self, policy: Policy) -> None:
        await self.session.delete(policy)
        await self.session.flush()

    async def existing_vm_ids(self, tenant_id: uuid.UUID, vm_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        if not vm_ids:
            return set()
        rows = await self.session.execute(
            select(VirtualMachine.id).where(
                VirtualMachine.tenant_id == tenant_id, VirtualMachine.id.in_(vm_ids)
            )
        )
        return set(rows.scalars())

    async def vm_counts(self, policy_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        if not policy_ids:
            return {}
        rows = await self.session.execute(
            select(VirtualMachine.protection_policy_id, func.count())
            .where(VirtualMachine.protection_policy_id.in_(policy_ids), VirtualMachine.gone_at.is_(None))
            .group_by(VirtualMachine.protection_policy_id)
        )
        return {pid: n for pid, n in rows.tuples() if pid is not None}

    async def conflict_vms(self, tenant_id: uuid.UUID) -> list[list[str]]:
        rows = await self.session.execute(
            select(VirtualMachine.conflicting_policy_ids).where(
                VirtualMachine.tenant_id == tenant_id, VirtualMachine.protection_status == "conflict"
            )
        )
        return [list(ids) for ids in rows.scalars()]
