"""Configuring integrations (customers their tenant's, operators any and the operators' own), their
signing secret (shown once), and their outbound delivery log."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.clock import Clock
from app.crypto import SecretBox
from app.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.integrations.destinations import DestinationRefused, IPNetwork, check_literal
from app.integrations.models import Delivery, Integration
from app.integrations.outbox import RETRY_FOR
from app.integrations.repository import DeliveryRepository, IntegrationRepository
from app.integrations.schemas import (
    ALERT_EVENTS,
    RESTORE_EVENTS,
    IntegrationCreate,
    IntegrationRead,
    IntegrationUpdate,
)
from app.integrations.signing import new_secret
from app.pagination import PageRequest
from app.tenants.repository import TenantRepository

TICKETS_PATH = "/api/v1/webhooks/tickets"


class IntegrationService:
    def __init__(
        self,
        session: AsyncSession,
        clock: Clock,
        box: SecretBox,
        allowed_networks: Sequence[IPNetwork] = (),
    ) -> None:
        self.repo = IntegrationRepository(session)
        #: Private networks outbound URLs may name besides public addresses (see destinations.py).
        self.allowed_networks = tuple(allowed_networks)
        self.deliveries = DeliveryRepository(session)
        self.tenants = TenantRepository(session)
        self.clock = clock
        self.box = box

    async def get(self, principal: Principal, integration_id: uuid.UUID) -> Integration:
        integration = await self.repo.get(integration_id, principal.tenant_scope)
        if integration is None:
            raise NotFound(f"Integration {integration_id} does not exist.")
        return integration

    async def list_page(
        self, principal: Principal, tenant_id: uuid.UUID | None, page: PageRequest
    ) -> tuple[list[Integration], int]:
        return await self.repo.list_page(principal.tenant_scope, tenant_id, page)

    async def create(self, principal: Principal, data: IntegrationCreate) -> tuple[Integration, str]:
        tenant_id = await self._tenant_for(principal, data)
        self._check_url(data.url)
        self._check_events(tenant_id, data.events)
        await self._check_name(tenant_id, data.name, None)
        secret = new_secret()
        now = self.clock.now()
        integration = Integration(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            name=data.name,
            url=str(data.url) if data.url is not None else None,
            secret_encrypted=self.box.encrypt(secret.encode()),
            events=list(dict.fromkeys(data.events)),
            enabled=data.enabled,
            created_at=now,
            updated_at=now,
        )
        await self.repo.add(integration)
        return integration, secret

    async def _tenant_for(self, principal: Principal, data: IntegrationCreate) -> uuid.UUID | None:
        """Customers: their own tenant (never an operators' integration). Operators: the tenant
        named, or none (an operators' integration)."""
        if not principal.is_operator:
            if "tenant_id" in data.model_fields_set and data.tenant_id is None:
                raise Forbidden(
                    "Only operators may create an operators' integration (tenant_id null); "
                    "leave tenant_id out to create one for your tenant."
                )
            if data.tenant_id is not None and data.tenant_id != principal.tenant_id:
                raise InvalidInput(
                    f"Tenant {data.tenant_id} does not exist; leave tenant_id out for your own tenant.",
                    field=["body", "tenant_id"],
                )
            return principal.tenant_id
        if data.tenant_id is not None and await self.tenants.get(data.tenant_id, None) is None:
            raise InvalidInput(f"Tenant {data.tenant_id} does not exist.", field=["body", "tenant_id"])
        return data.tenant_id

    def _check_url(self, url: object) -> None:
        if url is None:
            return
        try:
            check_literal(str(url), self.allowed_networks)
        except DestinationRefused as exc:
            raise InvalidInput(f"Outbound messages cannot go there: {exc}", field=["body", "url"]) from exc

    @staticmethod
    def _check_events(tenant_id: uuid.UUID | None, events: Sequence[str]) -> None:
        allowed = ALERT_EVENTS if tenant_id is None else RESTORE_EVENTS
        for index, event in enumerate(events):
            if event not in allowed:
                kind = "an operators' integration" if tenant_id is None else "a tenant's integration"
                raise InvalidInput(
                    f"{kind.capitalize()} receives only these events: {', '.join(allowed)}; not '{event}'.",
                    field=["body", "events", index],
                )

    async def _check_name(self, tenant_id: uuid.UUID | None, name: str, other_than: uuid.UUID | None) -> None:
        if await self.repo.name_taken(tenant_id, name, other_than):
            raise Conflict(f"An integration named '{name}' exists already; choose another name.")

    async def update(
        self, principal: Principal, integration_id: uuid.UUID, data: IntegrationUpdate
    ) -> Integration:
        integration = await self.get(principal, integration_id)
        fields = data.model_fields_set
        if "name" in fields and data.name is not None and data.name != integration.name:
            await self._check_name(integration.tenant_id, data.name, integration.id)
            integration.name = data.name
        if "url" in fields:
            self._check_url(data.url)
            integration.url = str(data.url) if data.url is not None else None
        if "events" in fields and data.events is not None:
            self._check_events(integration.tenant_id, data.events)
            integration.events = list(dict.fromkeys(data.events))
        if "enabled" in fields and data.enabled is not None:
            integration.enabled = data.enabled
        integration.updated_at = self.clock.now()
        return integration

    async def delete(self, principal: Principal, integration_id: uuid.UUID) -> None:
        """Its delivery log and receipts go with it; restores it asked for keep their ticket id."""
        await self.repo.delete(await self.get(principal, integration_id))

    async def rotate_secret(self, principal: Principal, integration_id: uuid.UUID) -> tuple[Integration, str]:
        """A new secret, at once for both directions: messages signed with the old one are refused."""
        integration = await self.get(principal, integration_id)
        secret = new_secret()
        integration.secret_encrypted = self.box.encrypt(secret.encode())
        integration.updated_at = self.clock.now()
        return integration, secret

    async def deliveries_page(
        self, principal: Principal, integration_id: uuid.UUID, state: str | None, page: PageRequest
    ) -> tuple[list[Delivery], int]:
        integration = await self.get(principal, integration_id)
        return await self.deliveries.list_page(integration.id, state, page)

    async def resend(
        self, principal: Principal, integration_id: uuid.UUID, delivery_id: uuid.UUID
    ) -> Delivery:
        """Send a delivered or failed message again (same message id, a new attempt, another day
        of retries). Later messages of its subject wait for it, as they would have the first time."""
        integration = await self.get(principal, integration_id)
        delivery = await self.deliveries.get(integration.id, delivery_id)
        if delivery is None:
            raise NotFound(f"Delivery {delivery_id} does not exist for integration {integration_id}.")
        if delivery.state == "pending":
            raise Conflict(f"Delivery {delivery_id} is still pending; it is sent (or retried) already.")
        if not integration.enabled or integration.url is None:
            raise Conflict(
                f"Integration '{integration.name}' is disabled or has no URL; "
                "enable it and set its URL first."
            )
        now = self.clock.now()
        delivery.state = "pending"
        delivery.attempts_before_resend = delivery.attempts
        delivery.next_attempt_at = now
        delivery.expires_at = now + RETRY_FOR
        delivery.leased_until = None
        delivery.delivered_at = None
        return delivery

    @staticmethod
    def to_read(integration: Integration) -> IntegrationRead:
        return IntegrationRead(
            id=integration.id,
            tenant_id=integration.tenant_id,
            name=integration.name,
            url=integration.url,
            events=list(integration.events or []),
            enabled=integration.enabled,
            inbound_url=(
                f"{TICKETS_PATH}?integration={integration.id}" if integration.tenant_id is not None else None
            ),
            created_at=integration.created_at,
            updated_at=integration.updated_at,
        )
