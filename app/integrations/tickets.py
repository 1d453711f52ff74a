"""Restore requests from ticketing systems: a signed webhook per ticket, one restore per ticket.

The signature is the authentication (no API key): a message is accepted only if it is signed
with its integration's secret and stamped within five minutes of now. A message id seen before
returns what its first delivery created; so does a new message for a ticket that already has a
restore. The restore itself is requested through :class:`RestoreService` as a customer of the
integration's tenant, so every rule of a normal request applies. A refused message creates
nothing: the receipt is written with the restore, in the request's one transaction.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.clock import Clock
from app.crypto import SecretBox, SecretBoxError
from app.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized, Unavailable
from app.integrations.models import Integration, WebhookReceipt
from app.integrations.repository import IntegrationRepository
from app.integrations.schemas import TicketFields
from app.integrations.signing import TOLERANCE, SignatureError, SignedHeaders, verify
from app.restore_points.models import RestorePoint
from app.restores.models import Restore
from app.restores.service import FileChecker, RestoreService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignedTicket:
    """A message whose signature holds, from a tenant's integration."""

    integration: Integration
    tenant_id: uuid.UUID
    headers: SignedHeaders


class TicketService:
    def __init__(
        self, session: AsyncSession, clock: Clock, box: SecretBox, files: FileChecker | None = None
    ) -> None:
        self.session = session
        self.clock = clock
        self.box = box
        self.repo = IntegrationRepository(session)
        self.restores = RestoreService(session, clock, box, files)

    async def authenticate(
        self, integration_id: uuid.UUID, body: bytes, headers: Mapping[str, str]
    ) -> SignedTicket:
        """Check the message's signature before anything else is looked at; Unauthorized (and a
        warning in the log) when it does not hold."""
        integration, signed = await self._verify(integration_id, body, headers)
        if integration.tenant_id is None:
            raise Forbidden(
                f"Integration {integration.id} is an operators' integration (it receives alerts); "
                "tickets go to an integration of the VM's tenant."
            )
        return SignedTicket(integration, integration.tenant_id, signed)

    async def receive(self, signed: SignedTicket, ticket: TicketFields) -> tuple[Restore, bool]:
        """The restore an authenticated message asks for, and whether it was created now (False:
        an earlier delivery of the message or of the ticket created it)."""
        integration = signed.integration
        receipt = await self.repo.receipt(integration.id, signed.headers.message_id)
        if receipt is not None:
            return await self._first_result(receipt), False
        now = self.clock.now()
        if ticket.created_at > now + TOLERANCE:
            raise InvalidInput(
                f"created_at {ticket.created_at.isoformat()} is in the future (now is {now.isoformat()}); "
                "send the time the ticket was opened, with its UTC offset.",
                field=["body", "created_at"],
            )
        existing = await self.repo.restore_for_ticket(integration.id, ticket.ticket_id)
        if existing is not None:
            try:
                async with self.session.begin_nested():
                    await self._record_receipt(signed, ticket.ticket_id, existing.id, now)
            except IntegrityError:
                pass  # a concurrent delivery of this very message recorded it
            return existing, False
        point = await self._point(signed.tenant_id, ticket)
        principal = Principal.of_integration(integration.id, signed.tenant_id)
        try:
            async with self.session.begin_nested():
                restore = await self.restores.request_from_ticket(
                    principal,
                    ticket.restore_request(point.id),
                    requested_at=ticket.created_at,
                    integration_id=integration.id,
                    ticket_id=ticket.ticket_id,
                )
                await self._record_receipt(signed, ticket.ticket_id, restore.id, now)
        except IntegrityError:
            # Another delivery of this ticket (or message) committed first: answer with its restore.
            winner = await self.repo.restore_for_ticket(integration.id, ticket.ticket_id)
            if winner is None:
                raise Conflict(
                    f"Ticket {ticket.ticket_id} was being handled by another delivery; send it again."
                ) from None
            return winner, False
        return restore, True

    async def _verify(
        self, integration_id: uuid.UUID, body: bytes, headers: Mapping[str, str]
    ) -> tuple[Integration, SignedHeaders]:
        integration = await self.repo.get(integration_id, None)
        if integration is None or not integration.enabled:
            self._refuse(integration_id, "no enabled integration has this id")
        try:
            secret = self.box.decrypt(integration.secret_encrypted).decode()
        except SecretBoxError:
            log.error("integration %s: its secret cannot be decrypted with the server key", integration_id)
            raise Unavailable(
                "This integration's secret cannot be read by the server (its key changed); "
                "rotate the secret (POST /api/v1/integrations/{id}/secret)."
            ) from None
        try:
            return integration, verify(secret, body, headers, self.clock.now())
        except SignatureError as exc:
            self._refuse(integration_id, str(exc))

    @staticmethod
    def _refuse(integration_id: uuid.UUID, reason: str) -> NoReturn:
        # Never the body or the secret: only which integration and why.
        log.warning("ticket webhook refused for integration %s: %s", integration_id, reason)
        raise Unauthorized(
            f"The webhook could not be authenticated: {reason}. Sign it with the integration's secret "
            "(Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature)."
        )

    async def _first_result(self, receipt: WebhookReceipt) -> Restore:
        restore = await self.repo.restore(receipt.restore_id) if receipt.restore_id else None
        if restore is None:
            raise Conflict(
                f"Message {receipt.message_id} was accepted before, but its restore no longer exists."
            )
        return restore

    async def _point(self, tenant_id: uuid.UUID, ticket: TicketFields) -> RestorePoint:
        vm = await self.repo.vm(ticket.vm_id, tenant_id)
        if vm is None:
            raise NotFound(f"VM {ticket.vm_id} does not exist in this integration's tenant.")
        if ticket.restore_point_id is not None:
            point = await self.repo.point_of_vm(ticket.restore_point_id, vm.id)
            if point is None:
                raise NotFound(f"VM '{vm.name}' has no restore point {ticket.restore_point_id}.")
            return point
        assert ticket.point_in_time is not None
        kind = "application" if getattr(ticket, "type", "vm") == "application" else "image"
        point = await self.repo.point_at(vm.id, kind, ticket.point_in_time)
        if point is None:
            raise NotFound(
                f"VM '{vm.name}' has no {kind} restore point taken at or before "
                f"{ticket.point_in_time.isoformat()}."
            )
        return point

    async def _record_receipt(
        self, signed: SignedTicket, ticket_id: str, restore_id: uuid.UUID, now: datetime
    ) -> None:
        await self.repo.add_receipt(
            WebhookReceipt(
                id=uuid.uuid4(),
                integration_id=signed.integration.id,
                message_id=signed.headers.message_id,
                ticket_id=ticket_id,
                restore_id=restore_id,
                received_at=now,
            )
        )
