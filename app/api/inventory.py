from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import Ctx, CurrentPrincipal, Pagination, Session
from app.api.openapi import AUTH_ERRORS, NOT_FOUND
from app.domain.protection import ProtectionStatus
from app.domain.space import SpaceStatus
from app.inventory.repository import DatastoreFilter, HostFilter, VmFilter
from app.inventory.schemas import DatastoreRead, HostRead, VmRead
from app.inventory.service import InventoryService
from app.pagination import Page

router = APIRouter(tags=["inventory"], responses=AUTH_ERRORS)

NameQuery = Annotated[str | None, Query(max_length=400, description="Name contains (case-insensitive)")]
GoneQuery = Annotated[bool, Query(description="Include objects that disappeared from vCenter")]


@router.get("/hosts", response_model=Page[HostRead], summary="ESXi hosts, with the proxies serving them")
async def list_hosts(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    vcenter_id: uuid.UUID | None = None,
    tenant_id: uuid.UUID | None = None,
    cluster: str | None = None,
    connection_state: str | None = None,
    has_online_proxy: bool | None = None,
    q: NameQuery = None,
    include_gone: GoneQuery = False,
) -> Page[HostRead]:
    f = HostFilter(
        vcenter_id=vcenter_id,
        tenant_id=tenant_id,
        cluster=cluster,
        connection_state=connection_state,
        name_contains=q,
        has_online_proxy=has_online_proxy,
        include_gone=include_gone,
    )
    items, total = await InventoryService(session, ctx.liveness).list_hosts(principal, f, page)
    return Page.of(items, total, page)


@router.get("/hosts/{host_id}", response_model=HostRead, responses=NOT_FOUND)
async def get_host(ctx: Ctx, session: Session, principal: CurrentPrincipal, host_id: uuid.UUID) -> HostRead:
    return await InventoryService(session, ctx.liveness).get_host(principal, host_id)


@router.get(
    "/datastores", response_model=Page[DatastoreRead], summary="Datastores with their free-space status"
)
async def list_datastores(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    vcenter_id: uuid.UUID | None = None,
    tenant_id: uuid.UUID | None = None,
    space_status: SpaceStatus | None = None,
    q: NameQuery = None,
    include_gone: GoneQuery = False,
) -> Page[DatastoreRead]:
    f = DatastoreFilter(
        vcenter_id=vcenter_id,
        tenant_id=tenant_id,
        space_status=space_status.value if space_status else None,
        name_contains=q,
        include_gone=include_gone,
    )
    items, total = await InventoryService(session, ctx.liveness).list_datastores(principal, f, page)
    return Page.of(items, total, page)


@router.get("/datastores/{datastore_id}", response_model=DatastoreRead, responses=NOT_FOUND)
async def get_datastore(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, datastore_id: uuid.UUID
) -> DatastoreRead:
    return await InventoryService(session, ctx.liveness).get_datastore(principal, datastore_id)


@router.get("/vms", response_model=Page[VmRead], summary="Virtual machines and their protection status")
async def list_vms(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    vcenter_id: uuid.UUID | None = None,
    tenant_id: uuid.UUID | None = None,
    host_id: uuid.UUID | None = None,
    datastore_id: uuid.UUID | None = None,
    power_state: str | None = None,
    protection_status: ProtectionStatus | None = None,
    policy_id: uuid.UUID | None = None,
    q: NameQuery = None,
    folder: Annotated[str | None, Query(max_length=2000, description="Folder path prefix")] = None,
    tag: Annotated[str | None, Query(max_length=400, description="'category:tag' or 'tag'")] = None,
    include_gone: GoneQuery = False,
) -> Page[VmRead]:
    f = VmFilter(
        vcenter_id=vcenter_id,
        tenant_id=tenant_id,
        host_id=host_id,
        datastore_id=datastore_id,
        power_state=power_state,
        protection_status=protection_status.value if protection_status else None,
        policy_id=policy_id,
        name_contains=q,
        folder=folder,
        tag=tag,
        include_gone=include_gone,
    )
    items, total = await InventoryService(session, ctx.liveness).list_vms(principal, f, page)
    return Page.of(items, total, page)


@router.get("/vms/{vm_id}", response_model=VmRead, responses=NOT_FOUND)
async def get_vm(ctx: Ctx, session: Session, principal: CurrentPrincipal, vm_id: uuid.UUID) -> VmRead:
    return await InventoryService(session, ctx.liveness).get_vm(principal, vm_id)
