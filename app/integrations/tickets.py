"""Restore requests from ticketing systems: a signed webhook per ticket, one restore per ticket.

The signature is the authentication (no API key): a message is accepted only if it is signed
with its integration's secret and stamped within five minutes of now. A message id seen before
returns what its first delivery created; so does a new message for a ticket that already has a
restore. The restore itself is requested through :class:`RestoreService` as a customer of the
integration's tenant, so every rule of a normal request applies. A refused message creates
nothing: the receipt is written with the restore, in the request's one transaction.

Two deliveries of one new ticket at the same instant both pass the lookups; the unique
(integration, ticket) on restores lets one commit and turns the other into a 409, which the
sender retries and then gets the restore with 200. Keeping that rare race out of the hot path
(no savepoint) keeps a new ticket to seven statements.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.clock import Clock
from app.crypto import SecretBox, SecretBoxError
from app.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized, Unavailable
from app.integrations.models import Integration, WebhookReceipt
from app.integrations.repository import IntegrationRepository, MessageContext
from app.integrations.schemas import TicketFields
from app.integrations.signing import TOLERANCE, SignatureError, SignedHeaders, verify
from app.inventory.models import VirtualMachine
from app.restore_points.models import RestorePoint
from app.restores.models import Restore
from app.restores.service import FileChecker, RestoreService, TicketOrigin

log = logging.getLogger(__name__)


class WebhookRefused(Unauthorized):
    """A message whose signature does not hold (401). It names the integration it was sent to and
    that integration's tenant (None when no such integration exists) for the audit log, so that a
    tenant sees the refused attempts against its own integration; the answer says neither."""

    def __init__(self, message: str, *, integration_id: uuid.UUID, tenant_id: uuid.UUID | None) -> None:
        super().__init__(message)
        self.integration_id = integration_id
        self.tenant_id = tenant_id


@dataclass(frozen=True)
class SignedTicket:
    """A message whose signature holds, from a tenant's integration, with what the catalog
    already knows of it (an earlier delivery's receipt, the ticket's restore)."""

    integration: Integration
    tenant_id: uuid.UUID
    headers: SignedHeaders
    known: MessageContext


def _raw_ticket_id(body: bytes) -> str | None:
    """The ticket id as the body will parse (stripped, like every input string), to look its
    restore up in the same round trip as the integration; None when the body says none."""
    try:
        value = json.loads(body).get("ticket_id")
    except (ValueError, AttributeError, RecursionError):  # not JSON, not an object, absurdly nested
        return None
    return value.strip() if isinstance(value, str) else None


@functools.lru_cache(maxsize=1024)
def _secret(box: SecretBox, encrypted: bytes) -> str:
    """An integration's secret, decrypted once per process and stored value: a Fernet decryption
    cost a sixteenth of a ticket's CPU. The ciphertext is the key (a new one for every rotation),
    so a rotated secret is never answered from the cache."""
    return box.decrypt(encrypted).decode()


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
        known = await self.repo.for_message(
            integration_id, headers.get("webhook-id", ""), _raw_ticket_id(body)
        )
        if known is None or not known.integration.enabled:
            tenant_id = known.integration.tenant_id if known is not None else None
            self._refuse(integration_id, "no enabled integration has this id", tenant_id)
        integration = known.integration
        try:
            secret = _secret(self.box, integration.secret_encrypted)
        except SecretBoxError:
            log.error("integration %s: its secret cannot be decrypted with the server key", integration_id)
            raise Unavailable(
                "This integration's secret cannot be read by the server (its key changed); "
                "rotate the secret (POST /api/v1/integrations/{id}/secret)."
            ) from None
        try:
            signed = verify(secret, body, headers, self.clock.now())
        except SignatureError as exc:
            self._refuse(integration_id, str(exc), integration.tenant_id)
        if integration.tenant_id is None:
            raise Forbidden(
                f"Integration {integration.id} is an operators' integration (it receives alerts); "
                "tickets go to an integration of the VM's tenant."
            )
        return SignedTicket(integration, integration.tenant_id, signed, known)

    @staticmethod
    def _refuse(integration_id: uuid.UUID, reason: str, tenant_id: uuid.UUID | None) -> NoReturn:
        # Never the body or the secret: only which integration and why.
        log.warning("ticket webhook refused for integration %s: %s", integration_id, reason)
        raise WebhookRefused(
            f"The webhook could not be authenticated: {reason}. Sign it with the integration's secret "
            "(Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature).",
            integration_id=integration_id,
            tenant_id=tenant_id,
        )

    async def receive(self, signed: SignedTicket, ticket: TicketFields) -> tuple[Restore, bool]:
        """The restore an authenticated message asks for, and whether it was created now (False:
        an earlier delivery of the message or of the ticket created it)."""
        integration, known = signed.integration, signed.known
        if known.seen_before:
            first = await self.repo.restore(known.restore_of_receipt) if known.restore_of_receipt else None
            if first is None:
                raise Conflict(
                    f"Message {signed.headers.message_id} was accepted before, "
                    "but its restore no longer exists."
                )
            if first.ticket_id != ticket.ticket_id:
                # The signature holds, so this is the sender's own mistake: a message id used for
                # two tickets. Answering with the first ticket's restore would tell the sender the
                # second ticket has one.
                raise Conflict(
                    f"Message {signed.headers.message_id} was accepted before for ticket "
                    f"{first.ticket_id}; this delivery names ticket {ticket.ticket_id}. Give each "
                    "message a webhook-id of its own."
                )
            return first, False
        now = self.clock.now()
        if ticket.created_at > now + TOLERANCE:
            raise InvalidInput(
                f"created_at {ticket.created_at.isoformat()} is in the future (now is {now.isoformat()}); "
                "send the time the ticket was opened, with its UTC offset.",
                field=["body", "created_at"],
            )
        if known.ticket_id != ticket.ticket_id:
            restore = await self.repo.restore_for_ticket(integration.id, ticket.ticket_id)
        elif known.restore_of_ticket is not None:
            restore = await self.repo.restore(known.restore_of_ticket)
        else:
            restore = None
        created = restore is None
        if restore is None:
            point, vm = await self._point(signed.tenant_id, ticket)
            restore = await self.restores.request(
                Principal.of_integration(integration.id, signed.tenant_id),
                ticket.restore_request(point.id),
                ticket=TicketOrigin(ticket.created_at, integration.id, ticket.ticket_id),
                found=(point, vm),
                flush=False,  # flushed with the receipt below
            )
        await self.repo.add_receipt(
            WebhookReceipt(
                id=uuid.uuid4(),
                integration_id=integration.id,
                message_id=signed.headers.message_id,
                ticket_id=ticket.ticket_id,
                restore_id=restore.id,
                received_at=now,
            )
        )
        return restore, created

    async def _point(self, tenant_id: uuid.UUID, ticket: TicketFields) -> tuple[RestorePoint, VirtualMachine]:
        """The point the ticket names, or the latest of the right kind at its point in time, with
        its VM; the VM and the point must be the integration's tenant's (404 otherwise, as for a
        customer)."""
        if ticket.restore_point_id is not None:
            found = await self.repo.point_of_vm(tenant_id, ticket.vm_id, ticket.restore_point_id)
            kind = None
        else:
            assert ticket.point_in_time is not None
            kind = "application" if getattr(ticket, "type", "vm") == "application" else "image"
            found = await self.repo.point_at(tenant_id, ticket.vm_id, kind, ticket.point_in_time)
        if found is not None:
            return found
        name = await self.repo.vm_name(ticket.vm_id, tenant_id)
        if name is None:
            raise NotFound(f"VM {ticket.vm_id} does not exist in this integration's tenant.")
        if kind is None:
            raise NotFound(f"VM '{name}' has no restore point {ticket.restore_point_id}.")
        assert ticket.point_in_time is not None
        raise NotFound(
            f"VM '{name}' has no {kind} restore point taken at or before {ticket.point_in_time.isoformat()}."
        )
