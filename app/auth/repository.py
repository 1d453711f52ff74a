"""All SQL about API keys."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import ApiKey
from app.db.paging import fetch_page
from app.pagination import PageRequest


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_by_lookup_id(self, lookup_id: str) -> ApiKey | None:
        stmt = select(ApiKey).where(ApiKey.lookup_id == lookup_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get(self, key_id: uuid.UUID, scope: uuid.UUID | None) -> ApiKey | None:
        stmt = select(ApiKey).where(ApiKey.id == key_id)
        if scope is not None:
            stmt = stmt.where(ApiKey.tenant_id == scope)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list_page(
        self,
        scope: uuid.UUID | None,
        page: PageRequest,
        tenant_id: uuid.UUID | None,
        role: str | None,
        include_revoked: bool,
    ) -> tuple[list[ApiKey], int]:
        stmt = select(ApiKey)
        if scope is not None:
            stmt = stmt.where(ApiKey.tenant_id == scope)
        if tenant_id is not None:
            stmt = stmt.where(ApiKey.tenant_id == tenant_id)
        if role is not None:
            stmt = stmt.where(ApiKey.role == role)
        if not include_revoked:
            stmt = stmt.where(ApiKey.revoked_at.is_(None))
        return await fetch_page(self.session, stmt, (ApiKey.created_at, ApiKey.id), page)

    async def add(self, key: ApiKey) -> None:
        self.session.add(key)
        await self.session.flush()

    async def touch(self, key_id: uuid.UUID, now: datetime, not_since: datetime) -> None:
        """Record use, at most once per interval, so that reads do not turn into a write each."""
        await self.session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id)
            .where((ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < not_since))
            .values(last_used_at=now)
        )
