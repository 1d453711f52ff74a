"""Change requests: customers ask for protection changes, operators approve or reject them."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Body, Query, status

from app.api.deps import Ctx, CurrentPrincipal, Pagination, Session
from app.api.openapi import AUTH_ERRORS, CONFLICT, NOT_FOUND
from app.api.routing import PrefixRouter
from app.changes.schemas import ChangeRequestCreate, ChangeRequestDecision, ChangeRequestRead
from app.changes.service import ChangeRequestService
from app.pagination import Page

router = PrefixRouter(prefix="/change-requests", tags=["change requests"], responses=AUTH_ERRORS)


@router.get("", response_model=Page[ChangeRequestRead], summary="Change requests, newest first")
async def list_change_requests(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    tenant_id: uuid.UUID | None = None,
    state: Annotated[str | None, Query(pattern="^(pending|approved|rejected|cancelled)$")] = None,
) -> Page[ChangeRequestRead]:
    items, total = await ChangeRequestService(session, ctx.clock).list_page(principal, tenant_id, state, page)
    return Page.of([ChangeRequestRead.model_validate(i) for i in items], total, page)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ChangeRequestRead,
    summary="Ask for a policy change, a new policy, or VMs (un)protected; an operator decides",
)
async def create_change_request(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    body: Annotated[ChangeRequestCreate, Body()],
    tenant_id: Annotated[uuid.UUID | None, Query(description="Operators: the tenant it is for")] = None,
) -> ChangeRequestRead:
    request = await ChangeRequestService(session, ctx.clock).create(principal, body, tenant_id)
    return ChangeRequestRead.model_validate(request)


@router.get("/{request_id}", response_model=ChangeRequestRead, responses=NOT_FOUND)
async def get_change_request(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, request_id: uuid.UUID
) -> ChangeRequestRead:
    return ChangeRequestRead.model_validate(
        await ChangeRequestService(session, ctx.clock).get(principal, request_id)
    )


@router.post(
    "/{request_id}/approve",
    response_model=ChangeRequestRead,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Apply the requested change (operators); all of it or nothing",
)
async def approve_change_request(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    request_id: uuid.UUID,
    body: ChangeRequestDecision | None = None,
) -> ChangeRequestRead:
    service = ChangeRequestService(session, ctx.clock)
    request = await service.approve(principal, request_id, body.reason if body else None)
    return ChangeRequestRead.model_validate(request)


@router.post(
    "/{request_id}/reject",
    response_model=ChangeRequestRead,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Refuse the request with a reason the customer sees (operators)",
)
async def reject_change_request(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    request_id: uuid.UUID,
    body: ChangeRequestDecision,
) -> ChangeRequestRead:
    request = await ChangeRequestService(session, ctx.clock).reject(principal, request_id, body.reason)
    return ChangeRequestRead.model_validate(request)


@router.post(
    "/{request_id}/cancel",
    response_model=ChangeRequestRead,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Withdraw a pending request",
)
async def cancel_change_request(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, request_id: uuid.UUID
) -> ChangeRequestRead:
    return ChangeRequestRead.model_validate(
        await ChangeRequestService(session, ctx.clock).cancel(principal, request_id)
    )
