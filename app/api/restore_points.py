from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import CurrentPrincipal, Pagination, Session
from app.api.openapi import AUTH_ERRORS, NOT_FOUND
from app.pagination import Page
from app.restore_points.repository import RestorePointFilter
from app.restore_points.schemas import RestorePointRead
from app.restore_points.service import RestorePointService, restore_point_read

router = APIRouter(prefix="/restore-points", tags=["restore-points"], responses=AUTH_ERRORS)


@router.get("", response_model=Page[RestorePointRead], summary="Restore points, newest first")
async def list_restore_points(
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    vm_id: uuid.UUID | None = None,
    tenant_id: uuid.UUID | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    kind: Annotated[str | None, Query(pattern="^(image|application)$")] = None,
) -> Page[RestorePointRead]:
    f = RestorePointFilter(
        tenant_id=tenant_id,
        vm_id=vm_id,
        created_after=created_after,
        created_before=created_before,
        kind=kind,
    )
    items, total = await RestorePointService(session).list_page(principal, f, page)
    return Page(
        items=[restore_point_read(p) for p in items], total=total, limit=page.limit, offset=page.offset
    )


@router.get("/{restore_point_id}", response_model=RestorePointRead, responses=NOT_FOUND)
async def get_restore_point(
    session: Session, principal: CurrentPrincipal, restore_point_id: uuid.UUID
) -> RestorePointRead:
    return restore_point_read(await RestorePointService(session).get(principal, restore_point_id))
