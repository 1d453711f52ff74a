from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, status

from app.api.deps import Ctx, CurrentPrincipal, Pagination, Session
from app.api.openapi import AUTH_ERRORS, CONFLICT, NOT_FOUND
from app.api.routing import PrefixRouter
from app.pagination import Page
from app.policies.schemas import PolicyCreate, PolicyRead, PolicyUpdate
from app.policies.service import PolicyService

router = PrefixRouter(prefix="/policies", tags=["policies"], responses=AUTH_ERRORS)


@router.get("", response_model=Page[PolicyRead], summary="List protection policies")
async def list_policies(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    tenant_id: uuid.UUID | None = None,
    enabled: bool | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Name contains")] = None,
) -> Page[PolicyRead]:
    service = PolicyService(session, ctx.clock)
    items, total = await service.list_page(principal, page, tenant_id, enabled, q)
    return Page.of(await service.to_read(items), total, page)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PolicyRead,
    responses=CONFLICT,
    summary="Create a protection policy (operators)",
)
async def create_policy(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, body: PolicyCreate
) -> PolicyRead:
    service = PolicyService(session, ctx.clock)
    return (await service.to_read([await service.create(principal, body)]))[0]


@router.get("/{policy_id}", response_model=PolicyRead, responses=NOT_FOUND)
async def get_policy(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, policy_id: uuid.UUID
) -> PolicyRead:
    service = PolicyService(session, ctx.clock)
    return (await service.to_read([await service.get(principal, policy_id)]))[0]


@router.patch(
    "/{policy_id}",
    response_model=PolicyRead,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Change a policy (operators); only the fields sent change",
)
async def update_policy(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, policy_id: uuid.UUID, body: PolicyUpdate
) -> PolicyRead:
    service = PolicyService(session, ctx.clock)
    return (await service.to_read([await service.update(principal, policy_id, body)]))[0]


@router.delete(
    "/{policy_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=NOT_FOUND,
    summary="Delete a policy (operators); its VMs become unprotected",
)
async def delete_policy(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, policy_id: uuid.UUID
) -> None:
    await PolicyService(session, ctx.clock).delete(principal, policy_id)
