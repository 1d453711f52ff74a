from __future__ import annotations

import uuid

from fastapi import status
from fastapi.responses import StreamingResponse
from pydantic import Field

from app.api.deps import Ctx, CurrentPrincipal, Pagination, Session
from app.api.downloads import content_disposition
from app.api.openapi import AUTH_ERRORS, CONFLICT, NOT_FOUND
from app.api.routing import PrefixRouter
from app.domain.jobs import RestoreState
from app.pagination import Page
from app.restores.schemas import RestoreCreate, RestoreRead
from app.restores.service import RestoreService, archive_of
from app.schemas import InputModel

router = PrefixRouter(prefix="/restores", tags=["restores"], responses=AUTH_ERRORS)


@router.get("", response_model=Page[RestoreRead], summary="Restores, newest first")
async def list_restores(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    vm_id: uuid.UUID | None = None,
    state: RestoreState | None = None,
) -> Page[RestoreRead]:
    service = RestoreService(session, ctx.clock, ctx.box, ctx.files)
    items, total = await service.list_page(principal, vm_id, state.value if state else None, page)
    return Page.of(await service.to_read(items), total, page)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RestoreRead,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Restore a VM from a restore point, over the original or as a new VM",
)
async def request_restore(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, body: RestoreCreate
) -> RestoreRead:
    service = RestoreService(session, ctx.clock, ctx.box, ctx.files)
    return (await service.to_read([await service.request(principal, body)]))[0]


@router.get(
    "/{restore_id}", response_model=RestoreRead, responses=NOT_FOUND, summary="A restore with its progress"
)
async def get_restore(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, restore_id: uuid.UUID
) -> RestoreRead:
    service = RestoreService(session, ctx.clock, ctx.box, ctx.files)
    return (await service.to_read([await service.get(principal, restore_id)]))[0]


@router.get(
    "/{restore_id}/archive",
    response_class=StreamingResponse,
    responses={
        **NOT_FOUND,
        **CONFLICT,
        200: {"content": {"application/octet-stream": {}}, "description": "The archive"},
    },
    summary="Download the archive of a file restore once it succeeded",
)
async def download_archive(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, restore_id: uuid.UUID
) -> StreamingResponse:
    restore = await RestoreService(session, ctx.clock, ctx.box, ctx.files).get(principal, restore_id)
    archive = archive_of(restore)
    size, chunks = await ctx.files.export_stream(archive.export_id, archive.stream)
    return StreamingResponse(
        chunks,
        media_type=archive.media_type,
        headers={"Content-Length": str(size), "Content-Disposition": content_disposition(archive.file_name)},
    )


class RejectBody(InputModel):
    reason: str = Field(min_length=1, max_length=2000, description="Shown to the customer on the restore.")


@router.post(
    "/{restore_id}/approve",
    response_model=RestoreRead,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Let a restore over an existing VM go ahead (operators)",
)
async def approve_restore(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, restore_id: uuid.UUID
) -> RestoreRead:
    service = RestoreService(session, ctx.clock, ctx.box, ctx.files)
    return (await service.to_read([await service.approve(principal, restore_id)]))[0]


@router.post(
    "/{restore_id}/reject",
    response_model=RestoreRead,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Refuse a restore awaiting approval, with a reason (operators)",
)
async def reject_restore(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, restore_id: uuid.UUID, body: RejectBody
) -> RestoreRead:
    service = RestoreService(session, ctx.clock, ctx.box, ctx.files)
    return (await service.to_read([await service.reject(principal, restore_id, body.reason)]))[0]
