from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query
from fastapi.responses import StreamingResponse

from app.api.deps import Ctx, CurrentPrincipal, Pagination, Session
from app.api.downloads import content_disposition
from app.api.openapi import AUTH_ERRORS, NOT_FOUND
from app.api.routing import PrefixRouter
from app.browse.schemas import DiskVolumes, FileListing
from app.pagination import Page
from app.restore_points.repository import RestorePointFilter
from app.restore_points.schemas import RestorePointRead
from app.restore_points.service import RestorePointService, restore_point_read
from app.schemas import Instant

router = PrefixRouter(prefix="/restore-points", tags=["restore-points"], responses=AUTH_ERRORS)


@router.get("", response_model=Page[RestorePointRead], summary="Restore points, newest first")
async def list_restore_points(
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    vm_id: uuid.UUID | None = None,
    tenant_id: uuid.UUID | None = None,
    created_after: Instant | None = None,
    created_before: Instant | None = None,
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
    return Page.of([restore_point_read(p) for p in items], total, page)


@router.get("/{restore_point_id}", response_model=RestorePointRead, responses=NOT_FOUND)
async def get_restore_point(
    session: Session, principal: CurrentPrincipal, restore_point_id: uuid.UUID
) -> RestorePointRead:
    return restore_point_read(await RestorePointService(session).get(principal, restore_point_id))


# -- file-level browsing of image restore points ------------------------------------------------------

DiskKey = Annotated[int, Query(description="Disk key, from GET /restore-points/{id}/volumes")]
Partition = Annotated[
    str, Query(min_length=1, max_length=300, description="Volume id, from GET /restore-points/{id}/volumes")
]
FilePath = Annotated[str, Query(min_length=1, max_length=4096, description="Absolute path inside the volume")]


@router.get(
    "/{restore_point_id}/volumes",
    response_model=list[DiskVolumes],
    responses=NOT_FOUND,
    summary="The disks of an image restore point, their partitions and filesystems",
)
async def list_volumes(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, restore_point_id: uuid.UUID
) -> list[DiskVolumes]:
    point = await RestorePointService(session).get(principal, restore_point_id)
    return await ctx.files.volumes(point)


@router.get(
    "/{restore_point_id}/files",
    response_model=FileListing,
    responses=NOT_FOUND,
    summary="List a directory inside an image restore point, without restoring the VM",
)
async def list_files(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    restore_point_id: uuid.UUID,
    disk: DiskKey,
    partition: Partition,
    path: Annotated[str, Query(min_length=1, max_length=4096, description="Directory to list")] = "/",
    cursor: Annotated[
        str | None, Query(max_length=1024, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Entries per page")] = 100,
) -> FileListing:
    point = await RestorePointService(session).get(principal, restore_point_id)
    return await ctx.files.list_dir(point, disk, partition, path, cursor, limit)


@router.get(
    "/{restore_point_id}/files/content",
    response_class=StreamingResponse,
    responses={**NOT_FOUND, 200: {"content": {"application/octet-stream": {}}, "description": "The file"}},
    summary="Download one file out of an image restore point (streamed)",
)
async def download_file(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    restore_point_id: uuid.UUID,
    disk: DiskKey,
    partition: Partition,
    path: FilePath,
) -> StreamingResponse:
    point = await RestorePointService(session).get(principal, restore_point_id)
    download = await ctx.files.download(point, disk, partition, path)
    return StreamingResponse(
        download.chunks,
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(download.entry.size),
            "Content-Disposition": content_disposition(download.entry.name),
        },
    )
