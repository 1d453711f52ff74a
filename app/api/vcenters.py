from __future__ import annotations

import uuid

from fastapi import status

from app.api.deps import Ctx, CurrentPrincipal, Pagination, Session
from app.api.openapi import AUTH_ERRORS, CONFLICT, NOT_FOUND, UPSTREAM
from app.api.routing import PrefixRouter
from app.inventory.schemas import SyncReport
from app.pagination import Page
from app.vcenters.schemas import VCenterCreate, VCenterRead, VCenterTestResult, VCenterUpdate
from app.vcenters.service import VCenterService

router = PrefixRouter(prefix="/vcenters", tags=["vcenters"], responses=AUTH_ERRORS)


@router.get("", response_model=Page[VCenterRead])
async def list_vcenters(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    tenant_id: uuid.UUID | None = None,
    connection_status: str | None = None,
) -> Page[VCenterRead]:
    items, total = await VCenterService(session, ctx.clock, ctx.box).list_page(
        principal, page, tenant_id, connection_status
    )
    return Page.of([VCenterRead.model_validate(v) for v in items], total, page)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=VCenterRead,
    responses=CONFLICT,
    summary="Register a vCenter (operators); credentials are stored encrypted, never returned",
)
async def register_vcenter(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, body: VCenterCreate
) -> VCenterRead:
    return VCenterRead.model_validate(
        await VCenterService(session, ctx.clock, ctx.box).register(principal, body)
    )


@router.get("/{vcenter_id}", response_model=VCenterRead, responses=NOT_FOUND)
async def get_vcenter(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, vcenter_id: uuid.UUID
) -> VCenterRead:
    return VCenterRead.model_validate(
        await VCenterService(session, ctx.clock, ctx.box).get(principal, vcenter_id)
    )


@router.patch("/{vcenter_id}", response_model=VCenterRead, responses={**NOT_FOUND, **CONFLICT})
async def update_vcenter(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, vcenter_id: uuid.UUID, body: VCenterUpdate
) -> VCenterRead:
    return VCenterRead.model_validate(
        await VCenterService(session, ctx.clock, ctx.box).update(principal, vcenter_id, body)
    )


@router.delete(
    "/{vcenter_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=NOT_FOUND,
    summary="Unregister a vCenter and forget its inventory (operators)",
)
async def delete_vcenter(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, vcenter_id: uuid.UUID
) -> None:
    await VCenterService(session, ctx.clock, ctx.box).delete(principal, vcenter_id)


@router.post(
    "/{vcenter_id}/test",
    response_model=VCenterTestResult,
    responses=NOT_FOUND,
    summary="Check that the vCenter answers and accepts the credentials",
)
async def test_vcenter(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, vcenter_id: uuid.UUID
) -> VCenterTestResult:
    principal.require_operator("test vCenter connections")
    await VCenterService(session, ctx.clock, ctx.box).get(principal, vcenter_id)
    await session.rollback()  # end the read transaction before the (slow) vCenter call
    return await ctx.checker.check(vcenter_id)


@router.post(
    "/{vcenter_id}/sync",
    response_model=SyncReport,
    responses={**NOT_FOUND, **CONFLICT, **UPSTREAM},
    summary="Refresh the inventory from vCenter now",
)
async def sync_vcenter(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, vcenter_id: uuid.UUID
) -> SyncReport:
    principal.require_operator("sync vCenters")
    await VCenterService(session, ctx.clock, ctx.box).get(principal, vcenter_id)
    await session.rollback()
    return await ctx.syncer.sync(vcenter_id)
