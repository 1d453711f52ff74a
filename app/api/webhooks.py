"""Inbound webhooks: ticketing systems ask for restores. The signature is the authentication."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response, status

from app.api.deps import Ctx, Session
from app.api.openapi import CONFLICT, NOT_FOUND, Problem
from app.api.routing import PrefixRouter
from app.auth.principal import Principal
from app.integrations.schemas import Ticket
from app.integrations.tickets import SignedTicket, TicketService, WebhookRefused
from app.restores.schemas import RestoreRead

router = PrefixRouter(prefix="/webhooks", tags=["webhooks"])


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description, "content": {"application/problem+json": {}}}


SIGNED_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _problem("Missing or bad signature, a timestamp off by more than 5 minutes, or no such integration"),
    403: _problem("An operators' integration cannot request restores"),
    422: _problem("Invalid ticket; `errors` lists each field path"),
}


async def _signed(
    ctx: Ctx,
    session: Session,
    request: Request,
    integration: Annotated[
        uuid.UUID, Query(description="The integration's id (its inbound_url carries it).")
    ],
) -> SignedTicket:
    # A dependency runs before the body is validated: an unsigned message learns nothing more.
    try:
        signed = await TicketService(session, ctx.clock, ctx.box).authenticate(
            integration, await request.body(), request.headers
        )
    except WebhookRefused as refused:
        # The audit log names the integration the refused message was sent to, and its tenant.
        request.state.refused_integration = (refused.integration_id, refused.tenant_id)
        raise
    # The audit log attributes the request to the integration (not to an anonymous caller).
    request.state.principal = Principal.of_integration(signed.integration.id, signed.tenant_id)
    return signed


@router.post(
    "/tickets",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RestoreRead,
    responses={
        **SIGNED_ERRORS,
        **NOT_FOUND,
        **CONFLICT,
        200: {"model": RestoreRead, "description": "Seen before (same message or ticket): its restore"},
    },
    summary="A ticket asks for a restore (Standard Webhooks signature; one restore per ticket)",
)
async def receive_ticket(
    ctx: Ctx,
    session: Session,
    signed: Annotated[SignedTicket, Depends(_signed)],
    body: Ticket,
    response: Response,
) -> RestoreRead:
    """Headers ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` sign the body with
    the integration's secret (HMAC-SHA256). A retried delivery (same ``webhook-id``) or another
    message for a ticket that already has a restore returns that restore with 200."""
    service = TicketService(session, ctx.clock, ctx.box, ctx.files)
    restore, created = await service.receive(signed, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return (await service.restores.to_read([restore]))[0]
