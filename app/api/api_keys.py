from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, status

from app.api.deps import Ctx, CurrentPrincipal, Pagination, Session
from app.api.openapi import AUTH_ERRORS, CONFLICT, NOT_FOUND
from app.api.routing import PrefixRouter
from app.auth.principal import Role
from app.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from app.auth.service import ApiKeyService
from app.pagination import Page

router = PrefixRouter(prefix="/api-keys", tags=["api-keys"], responses=AUTH_ERRORS)


@router.get("", response_model=Page[ApiKeyRead], summary="List API keys (customers see their tenant's)")
async def list_keys(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    tenant_id: uuid.UUID | None = None,
    role: Role | None = None,
    include_revoked: Annotated[bool, Query()] = False,
) -> Page[ApiKeyRead]:
    items, total = await ApiKeyService(session, ctx.clock).list_page(
        principal, page, tenant_id, role, include_revoked
    )
    return Page.of([ApiKeyRead.model_validate(k) for k in items], total, page)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    summary="Create an API key (operators); the secret is shown once",
)
async def create_key(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, body: ApiKeyCreate
) -> ApiKeyCreated:
    key, secret = await ApiKeyService(session, ctx.clock).create(principal, body)
    return ApiKeyCreated.model_validate({**ApiKeyRead.model_validate(key).model_dump(), "key": secret})


@router.get("/{key_id}", response_model=ApiKeyRead, responses=NOT_FOUND)
async def get_key(ctx: Ctx, session: Session, principal: CurrentPrincipal, key_id: uuid.UUID) -> ApiKeyRead:
    return ApiKeyRead.model_validate(await ApiKeyService(session, ctx.clock).get(principal, key_id))


@router.post(
    "/{key_id}/revoke",
    response_model=ApiKeyRead,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Revoke an API key (operators)",
)
async def revoke_key(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, key_id: uuid.UUID
) -> ApiKeyRead:
    return ApiKeyRead.model_validate(await ApiKeyService(session, ctx.clock).revoke(principal, key_id))


@router.delete(
    "/{key_id}",
    response_model=ApiKeyRead,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Revoke an API key (same as POST .../revoke)",
)
async def delete_key(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, key_id: uuid.UUID
) -> ApiKeyRead:
    return ApiKeyRead.model_validate(await ApiKeyService(session, ctx.clock).revoke(principal, key_id))
