"""Integrations: ticketing and monitoring systems, their signing secret and their delivery log."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, status

from app.api.deps import Ctx, CurrentPrincipal, Pagination, Session
from app.api.openapi import AUTH_ERRORS, CONFLICT, NOT_FOUND
from app.api.routing import PrefixRouter
from app.integrations.schemas import (
    DeliveryRead,
    DeliveryState,
    IntegrationCreate,
    IntegrationCreated,
    IntegrationRead,
    IntegrationUpdate,
)
from app.integrations.service import IntegrationService
from app.pagination import Page

router = PrefixRouter(prefix="/integrations", tags=["integrations"], responses=AUTH_ERRORS)


def _service(ctx: Ctx, session: Session) -> IntegrationService:
    return IntegrationService(session, ctx.clock, ctx.box, ctx.settings.webhook_allowed_networks)


def _created(read: IntegrationRead, secret: str) -> IntegrationCreated:
    return IntegrationCreated.model_validate({**read.model_dump(), "secret": secret})


@router.get(
    "",
    response_model=Page[IntegrationRead],
    summary="Integrations (customers see their tenant's; operators all, and the operators' own)",
)
async def list_integrations(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    tenant_id: uuid.UUID | None = None,
) -> Page[IntegrationRead]:
    service = _service(ctx, session)
    items, total = await service.list_page(principal, tenant_id, page)
    return Page.of([service.to_read(i) for i in items], total, page)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=IntegrationCreated,
    responses=CONFLICT,
    summary="Connect a ticketing or monitoring system; its signing secret is shown once",
)
async def create_integration(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, body: IntegrationCreate
) -> IntegrationCreated:
    service = _service(ctx, session)
    integration, secret = await service.create(principal, body)
    return _created(service.to_read(integration), secret)


@router.get("/{integration_id}", response_model=IntegrationRead, responses=NOT_FOUND)
async def get_integration(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, integration_id: uuid.UUID
) -> IntegrationRead:
    service = _service(ctx, session)
    return service.to_read(await service.get(principal, integration_id))


@router.patch(
    "/{integration_id}",
    response_model=IntegrationRead,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Change an integration's name, URL, events or whether it is enabled",
)
async def update_integration(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    integration_id: uuid.UUID,
    body: IntegrationUpdate,
) -> IntegrationRead:
    service = _service(ctx, session)
    return service.to_read(await service.update(principal, integration_id, body))


@router.delete("/{integration_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_integration(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, integration_id: uuid.UUID
) -> None:
    await _service(ctx, session).delete(principal, integration_id)


@router.post(
    "/{integration_id}/secret",
    response_model=IntegrationCreated,
    responses=NOT_FOUND,
    summary="Issue a new signing secret (shown once); the old one stops working at once",
)
async def rotate_integration_secret(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, integration_id: uuid.UUID
) -> IntegrationCreated:
    service = _service(ctx, session)
    integration, secret = await service.rotate_secret(principal, integration_id)
    return _created(service.to_read(integration), secret)


@router.get(
    "/{integration_id}/deliveries",
    response_model=Page[DeliveryRead],
    responses=NOT_FOUND,
    summary="The integration's outbound messages, newest first",
)
async def list_deliveries(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    integration_id: uuid.UUID,
    state: Annotated[DeliveryState | None, Query(description="pending, delivered or failed")] = None,
) -> Page[DeliveryRead]:
    items, total = await _service(ctx, session).deliveries_page(principal, integration_id, state, page)
    return Page.of([DeliveryRead.model_validate(d) for d in items], total, page)


@router.post(
    "/{integration_id}/deliveries/{delivery_id}/resend",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryRead,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Send a delivered or failed message again (same webhook-id, a new attempt)",
)
async def resend_delivery(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, integration_id: uuid.UUID, delivery_id: uuid.UUID
) -> DeliveryRead:
    delivery = await _service(ctx, session).resend(principal, integration_id, delivery_id)
    return DeliveryRead.model_validate(delivery)
