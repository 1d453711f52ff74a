from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, status

from app.api.deps import Ctx, CurrentPrincipal, Pagination, Session
from app.api.openapi import AUTH_ERRORS, CONFLICT, NOT_FOUND
from app.api.routing import PrefixRouter
from app.pagination import Page
from app.tenants.schemas import TenantCreate, TenantRead, TenantUpdate
from app.tenants.service import TenantService

router = PrefixRouter(prefix="/tenants", tags=["tenants"], responses=AUTH_ERRORS)


@router.get("", response_model=Page[TenantRead], summary="List tenants (customers see their own)")
async def list_tenants(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    q: Annotated[str | None, Query(max_length=200, description="Name contains")] = None,
) -> Page[TenantRead]:
    items, total = await TenantService(session, ctx.clock).list_page(principal, page, q)
    return Page.of([TenantRead.model_validate(t) for t in items], total, page)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TenantRead,
    responses=CONFLICT,
    summary="Create a tenant (operators)",
)
async def create_tenant(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, body: TenantCreate
) -> TenantRead:
    return TenantRead.model_validate(await TenantService(session, ctx.clock).create(principal, body))


@router.get("/{tenant_id}", response_model=TenantRead, responses=NOT_FOUND)
async def get_tenant(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, tenant_id: uuid.UUID
) -> TenantRead:
    return TenantRead.model_validate(await TenantService(session, ctx.clock).get(principal, tenant_id))


@router.patch(
    "/{tenant_id}",
    response_model=TenantRead,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Rename a tenant or change its settings (operators)",
)
async def update_tenant(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, tenant_id: uuid.UUID, body: TenantUpdate
) -> TenantRead:
    return TenantRead.model_validate(
        await TenantService(session, ctx.clock).update(principal, tenant_id, body)
    )


@router.delete(
    "/{tenant_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Delete a tenant that owns nothing any more (operators)",
)
async def delete_tenant(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, tenant_id: uuid.UUID
) -> None:
    await TenantService(session, ctx.clock).delete(principal, tenant_id)
