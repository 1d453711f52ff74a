"""Guest agents: register one per VM (customers for their own VMs), list, rotate, delete."""

from __future__ import annotations

import uuid

from fastapi import status

from app.api.deps import Ctx, CurrentPrincipal, Pagination, Session
from app.api.openapi import AUTH_ERRORS, CONFLICT, NOT_FOUND
from app.api.routing import PrefixRouter
from app.guests.schemas import GuestAgentCreate, GuestAgentCreated, GuestAgentRead
from app.guests.service import GuestAgentService
from app.pagination import Page

router = PrefixRouter(prefix="/guest-agents", tags=["guest agents"], responses=AUTH_ERRORS)


def _service(ctx: Ctx, session: Session) -> GuestAgentService:
    return GuestAgentService(session, ctx.clock, ctx.liveness)


@router.get("", response_model=Page[GuestAgentRead], summary="List guest agents of the caller's tenant")
async def list_guest_agents(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, page: Pagination, vm_id: uuid.UUID | None = None
) -> Page[GuestAgentRead]:
    service = _service(ctx, session)
    items, total = await service.list_page(principal, vm_id, page)
    return Page.of(await service.to_read(items), total, page)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=GuestAgentCreated,
    responses=CONFLICT,
    summary="Register the guest agent of a VM; its token is shown once",
)
async def register_guest_agent(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, body: GuestAgentCreate
) -> GuestAgentCreated:
    service = _service(ctx, session)
    agent, token = await service.register(principal, body)
    read = (await service.to_read([agent]))[0]
    return GuestAgentCreated.model_validate({**read.model_dump(), "token": token})


@router.get("/{agent_id}", response_model=GuestAgentRead, responses=NOT_FOUND)
async def get_guest_agent(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, agent_id: uuid.UUID
) -> GuestAgentRead:
    service = _service(ctx, session)
    return (await service.to_read([await service.get(principal, agent_id)]))[0]


@router.post(
    "/{agent_id}/token",
    response_model=GuestAgentCreated,
    responses=NOT_FOUND,
    summary="Issue a new token; the old one stops working at once",
)
async def rotate_guest_agent_token(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, agent_id: uuid.UUID
) -> GuestAgentCreated:
    service = _service(ctx, session)
    agent, token = await service.rotate_token(principal, agent_id)
    read = (await service.to_read([agent]))[0]
    return GuestAgentCreated.model_validate({**read.model_dump(), "token": token})


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_guest_agent(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, agent_id: uuid.UUID
) -> None:
    await _service(ctx, session).delete(principal, agent_id)
