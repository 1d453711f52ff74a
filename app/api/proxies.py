from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, status

from app.api.deps import Ctx, CurrentPrincipal, Pagination, Session
from app.api.openapi import AUTH_ERRORS, CONFLICT, NOT_FOUND
from app.api.routing import PrefixRouter
from app.pagination import Page
from app.proxies.schemas import ProxyCreate, ProxyCreated, ProxyRead, ProxyUpdate
from app.proxies.service import ProxyService

router = PrefixRouter(prefix="/proxies", tags=["proxies"], responses=AUTH_ERRORS)


@router.get("", response_model=Page[ProxyRead], summary="List proxies (operators)")
async def list_proxies(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    host_id: uuid.UUID | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Name contains")] = None,
) -> Page[ProxyRead]:
    service = ProxyService(session, ctx.clock, ctx.liveness)
    items, total = await service.list_page(principal, page, host_id, q)
    return Page.of(await service.to_read(items), total, page)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ProxyCreated,
    responses=CONFLICT,
    summary="Register a proxy for hosts (operators); its token is shown once",
)
async def register_proxy(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, body: ProxyCreate
) -> ProxyCreated:
    service = ProxyService(session, ctx.clock, ctx.liveness)
    proxy, token = await service.register(principal, body)
    read = (await service.to_read([proxy]))[0]
    return ProxyCreated.model_validate({**read.model_dump(), "token": token})


@router.get("/{proxy_id}", response_model=ProxyRead, responses=NOT_FOUND)
async def get_proxy(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, proxy_id: uuid.UUID
) -> ProxyRead:
    service = ProxyService(session, ctx.clock, ctx.liveness)
    return (await service.to_read([await service.get(principal, proxy_id)]))[0]


@router.patch("/{proxy_id}", response_model=ProxyRead, responses={**NOT_FOUND, **CONFLICT})
async def update_proxy(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, proxy_id: uuid.UUID, body: ProxyUpdate
) -> ProxyRead:
    service = ProxyService(session, ctx.clock, ctx.liveness)
    return (await service.to_read([await service.update(principal, proxy_id, body)]))[0]


@router.post(
    "/{proxy_id}/token",
    response_model=ProxyCreated,
    responses=NOT_FOUND,
    summary="Issue a new token; the old one stops working at once",
)
async def rotate_proxy_token(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, proxy_id: uuid.UUID
) -> ProxyCreated:
    service = ProxyService(session, ctx.clock, ctx.liveness)
    proxy, token = await service.rotate_token(principal, proxy_id)
    read = (await service.to_read([proxy]))[0]
    return ProxyCreated.model_validate({**read.model_dump(), "token": token})


@router.delete("/{proxy_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**NOT_FOUND, **CONFLICT})
async def delete_proxy(ctx: Ctx, session: Session, principal: CurrentPrincipal, proxy_id: uuid.UUID) -> None:
    await ProxyService(session, ctx.clock, ctx.liveness).delete(principal, proxy_id)
