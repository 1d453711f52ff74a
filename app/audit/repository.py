"""All SQL about the audit log: inserts and filtered pages, nothing that changes a row."""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import AuditEvent
from app.audit.schemas import AuditFilter
from app.db.paging import fetch_page
from app.pagination import PageRequest


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_many(self, rows: list[dict[str, Any]]) -> None:
        """One INSERT for all rows, on the table (Core): no unit of work and no ORM bulk layer,
        whose bookkeeping cost more CPU than the statement (rows all have the same keys)."""
        await self.session.execute(insert(cast(Table, AuditEvent.__table__)), rows)

    async def list_page(
        self, scope: uuid.UUID | None, f: AuditFilter, page: PageRequest
    ) -> tuple[list[AuditEvent], int]:
        stmt = select(AuditEvent)
        for column, value in (
            (AuditEvent.tenant_id, scope),
            (AuditEvent.tenant_id, f.tenant_id),
            (AuditEvent.key_id, f.key_id),
            (AuditEvent.key_lookup_id, f.key_lookup_id),
            (AuditEvent.actor, f.actor),
            (AuditEvent.action, f.action),
            (AuditEvent.object_id, f.object_id),
            (AuditEvent.outcome, f.outcome),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if f.since is not None:
            stmt = stmt.where(AuditEvent.at >= f.since)
        if f.until is not None:
            stmt = stmt.where(AuditEvent.at < f.until)
        return await fetch_page(self.session, stmt, (AuditEvent.at.desc(), AuditEvent.id.desc()), page)
