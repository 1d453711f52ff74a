"""All SQL about change requests."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.changes.models import ChangeRequest
from app.db.dialect import lock_for_decision
from app.db.paging import fetch_page
from app.pagination import PageRequest


class ChangeRequestRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, request: ChangeRequest) -> None:
        self.session.add(request)
        await self.session.flush()

    async def get(self, request_id: uuid.UUID, scope: uuid.UUID | None) -> ChangeRequest | None:
        stmt = select(ChangeRequest).where(ChangeRequest.id == request_id)
        if scope is not None:
            stmt = stmt.where(ChangeRequest.tenant_id == scope)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_for_update(self, request_id: uuid.UUID) -> ChangeRequest | None:
        """Locked (PostgreSQL) so that two operators deciding at once take turns, and read afresh:
        the session may hold the row from before the lock, and without ``populate_existing`` it
        would keep that state instead of the one the other decision committed."""
        stmt = lock_for_decision(select(ChangeRequest).where(ChangeRequest.id == request_id), self.session)
        stmt = stmt.execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list_page(
        self, scope: uuid.UUID | None, tenant_id: uuid.UUID | None, state: str | None, page: PageRequest
    ) -> tuple[list[ChangeRequest], int]:
        stmt = select(ChangeRequest)
        for column, value in (
            (ChangeRequest.tenant_id, scope),
            (ChangeRequest.tenant_id, tenant_id),
            (ChangeRequest.state, state),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        return await fetch_page(self.session, stmt, (ChangeRequest.created_at.desc(), ChangeRequest.id), page)
