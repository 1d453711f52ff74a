"""All SQL about guest agents (rows of ``proxies`` with kind 'guest')."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.paging import fetch_page
from app.domain.jobs import AgentKind
from app.inventory.models import VirtualMachine
from app.pagination import PageRequest
from app.proxies.models import Proxy


class GuestAgentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _guests(self, scope: uuid.UUID | None) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = [Proxy.kind == AgentKind.GUEST.value]
        if scope is not None:
            where.append(Proxy.tenant_id == scope)
        return where

    async def get(self, agent_id: uuid.UUID, scope: uuid.UUID | None) -> Proxy | None:
        stmt = select(Proxy).where(Proxy.id == agent_id, *self._guests(scope))
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def for_vm(self, vm_id: uuid.UUID) -> Proxy | None:
        stmt = select(Proxy).where(Proxy.vm_id == vm_id, Proxy.kind == AgentKind.GUEST.value)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def for_vms(self, vm_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Proxy]:
        if not vm_ids:
            return {}
        rows = await self.session.execute(
            select(Proxy).where(Proxy.vm_id.in_(set(vm_ids)), Proxy.kind == AgentKind.GUEST.value)
        )
        return {p.vm_id: p for p in rows.scalars() if p.vm_id is not None}

    async def list_page(
        self, scope: uuid.UUID | None, vm_id: uuid.UUID | None, page: PageRequest
    ) -> tuple[list[Proxy], int]:
        stmt = select(Proxy).where(*self._guests(scope))
        if vm_id is not None:
            stmt = stmt.where(Proxy.vm_id == vm_id)
        return await fetch_page(self.session, stmt, (Proxy.created_at, Proxy.id), page)

    async def vm_names(self, vm_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        if not vm_ids:
            return {}
        rows = await self.session.execute(
            select(VirtualMachine.id, VirtualMachine.name).where(VirtualMachine.id.in_(set(vm_ids)))
        )
        return dict(rows.tuples().all())
