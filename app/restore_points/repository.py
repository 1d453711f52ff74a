"""All SQL about restore points."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.paging import fetch_page
from app.inventory.models import VirtualMachine
from app.pagination import PageRequest
from app.restore_points.models import RestorePoint

#: A point with its VM (a restore request needs both): one join instead of two round trips.
POINT_WITH_VM = select(RestorePoint, VirtualMachine).join(
    VirtualMachine, VirtualMachine.id == RestorePoint.vm_id
)


@dataclass(frozen=True)
class RestorePointFilter:
    tenant_id: uuid.UUID | None = None
    vm_id: uuid.UUID | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    kind: str | None = None


@functools.cache
def _latest_for_vm() -> Select[tuple[RestorePoint]]:
    """Built once, on first use (every backup's assignment reads its VM's previous point)."""
    return (
        select(RestorePoint)
        .where(RestorePoint.vm_id == bindparam("vm_id"), RestorePoint.kind == bindparam("kind"))
        .order_by(RestorePoint.created_at.desc(), RestorePoint.id)
        .limit(1)
    )


class RestorePointRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, point: RestorePoint) -> None:
        self.session.add(point)
        await self.session.flush()

    async def get(self, point_id: uuid.UUID, scope: uuid.UUID | None = None) -> RestorePoint | None:
        stmt = select(RestorePoint).where(RestorePoint.id == point_id)
        if scope is not None:
            stmt = stmt.where(RestorePoint.tenant_id == scope)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_with_vm(
        self, point_id: uuid.UUID, scope: uuid.UUID | None = None
    ) -> tuple[RestorePoint, VirtualMachine] | None:
        """The point and its VM in one round trip (a restore request needs both)."""
        stmt = POINT_WITH_VM.where(RestorePoint.id == point_id)
        if scope is not None:
            stmt = stmt.where(RestorePoint.tenant_id == scope)
        row = (await self.session.execute(stmt)).one_or_none()
        return (row[0], row[1]) if row is not None else None

    async def latest_for_vm(self, vm_id: uuid.UUID, kind: str = "image") -> RestorePoint | None:
        """The VM's newest point of ``kind`` (image points chain CBT, application points chunking)."""
        params = {"vm_id": vm_id, "kind": kind}
        return (await self.session.execute(_latest_for_vm(), params)).scalar_one_or_none()

    async def list_page(
        self, scope: uuid.UUID | None, f: RestorePointFilter, page: PageRequest
    ) -> tuple[list[RestorePoint], int]:
        stmt = select(RestorePoint)
        for column, value in (
            (RestorePoint.tenant_id, scope),
            (RestorePoint.tenant_id, f.tenant_id),
            (RestorePoint.vm_id, f.vm_id),
            (RestorePoint.kind, f.kind),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if f.created_after is not None:
            stmt = stmt.where(RestorePoint.created_at >= f.created_after)
        if f.created_before is not None:
            stmt = stmt.where(RestorePoint.created_at < f.created_before)
        return await fetch_page(self.session, stmt, (RestorePoint.created_at.desc(), RestorePoint.id), page)
