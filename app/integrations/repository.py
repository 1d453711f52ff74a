"""All SQL about integrations, inbound receipts and the outbound delivery log."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.compliance.models import RestoreSla
from app.db.dialect import insert_ignoring_conflicts, lock_for_claim
from app.db.paging import fetch_page
from app.db.warmup import hot_statement
from app.integrations.models import Delivery, Integration, WebhookReceipt
from app.inventory.models import VirtualMachine
from app.pagination import PageRequest
from app.policies.models import Policy
from app.restore_points.models import RestorePoint
from app.restore_points.repository import POINT_WITH_VM
from app.restores.models import Restore

#: Bound parameters per ``IN (...)`` list, well under SQLite's and asyncpg's limits.
CHUNK = 1000


# Aliases are built once: a new alias per call would make every statement a new one to compile
# (SQLAlchemy caches compiled statements by their structure, aliases included).
_RESTORE_OF_TICKET = aliased(Restore, name="restore_of_ticket")
_EARLIER = aliased(Delivery, name="earlier")
_OTHER = aliased(Delivery, name="other")


# The webhook's hot path runs these on every delivery: built once, with bound parameters, they
# cost no Python to construct and their cache key is computed once (~0.1-0.2 ms a statement).
# Built on first use, not at import: a foreign-key column takes its type from the column it
# references only once that table is loaded, and a parameter compared with it before stays
# untyped (SQLite then cannot bind a UUID).


@hot_statement
@functools.cache
def _for_message() -> Select[tuple[Integration, uuid.UUID, uuid.UUID | None, uuid.UUID]]:
    return (
        select(Integration, WebhookReceipt.id, WebhookReceipt.restore_id, _RESTORE_OF_TICKET.id)
        .outerjoin(
            WebhookReceipt,
            and_(
                WebhookReceipt.integration_id == Integration.id,
                WebhookReceipt.message_id == bindparam("message_id"),
            ),
        )
        .outerjoin(
            _RESTORE_OF_TICKET,
            and_(
                _RESTORE_OF_TICKET.integration_id == Integration.id,
                _RESTORE_OF_TICKET.ticket_id == bindparam("ticket_id"),
            ),
        )
        .where(Integration.id == bindparam("integration_id"))
    )


@hot_statement
@functools.cache
def _point_of_vm() -> Select[tuple[RestorePoint, VirtualMachine]]:
    return POINT_WITH_VM.where(
        RestorePoint.id == bindparam("point_id"),
        RestorePoint.vm_id == bindparam("vm_id"),
        RestorePoint.tenant_id == bindparam("tenant_id"),
    )


@hot_statement
@functools.cache
def _point_at() -> Select[tuple[RestorePoint, VirtualMachine]]:
    return (
        POINT_WITH_VM.where(
            RestorePoint.vm_id == bindparam("vm_id"),
            RestorePoint.tenant_id == bindparam("tenant_id"),
            RestorePoint.kind == bindparam("kind"),
            RestorePoint.created_at <= bindparam("at"),
        )
        .order_by(RestorePoint.created_at.desc(), RestorePoint.id)
        .limit(1)
    )


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


@dataclass(frozen=True)
class MessageContext:
    """What an inbound message needs to know before it is handled (see ``for_message``)."""

    integration: Integration
    #: An earlier delivery of this very message: its receipt, and the restore it returned.
    seen_before: bool
    restore_of_receipt: uuid.UUID | None
    #: The ticket id the restore of the ticket was looked up by (from the raw body, unverified).
    ticket_id: str | None
    restore_of_ticket: uuid.UUID | None


class IntegrationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, integration: Integration) -> None:
        self.session.add(integration)
        await self.session.flush()

    async def get(self, integration_id: uuid.UUID, scope: uuid.UUID | None) -> Integration | None:
        """``scope``: the caller's tenant (None: all, operators'). A customer never sees an
        operators' integration (its tenant is null)."""
        stmt = select(Integration).where(Integration.id == integration_id)
        if scope is not None:
            stmt = stmt.where(Integration.tenant_id == scope)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def name_taken(self, tenant_id: uuid.UUID | None, name: str, other_than: uuid.UUID | None) -> bool:
        stmt = select(Integration.id).where(
            Integration.name == name,
            Integration.tenant_id.is_(None) if tenant_id is None else Integration.tenant_id == tenant_id,
        )
        if other_than is not None:
            stmt = stmt.where(Integration.id != other_than)
        return (await self.session.execute(stmt.limit(1))).first() is not None

    async def list_page(
        self, scope: uuid.UUID | None, tenant_id: uuid.UUID | None, page: PageRequest
    ) -> tuple[list[Integration], int]:
        stmt = select(Integration)
        for value in (scope, tenant_id):
            if value is not None:
                stmt = stmt.where(Integration.tenant_id == value)
        return await fetch_page(self.session, stmt, (Integration.created_at, Integration.id), page)

    async def delete(self, integration: Integration) -> None:
        await self.session.execute(delete(Integration).where(Integration.id == integration.id))

    async def sending(self, operators: bool) -> list[Integration]:
        """Enabled integrations with a URL: the tenants' (restore events) or the operators' (alerts)."""
        stmt = select(Integration).where(Integration.enabled.is_(True), Integration.url.is_not(None))
        stmt = stmt.where(
            Integration.tenant_id.is_(None) if operators else Integration.tenant_id.is_not(None)
        )
        return list((await self.session.execute(stmt.order_by(Integration.id))).scalars())

    # -- inbound ------------------------------------------------------------------------------------

    async def for_message(
        self, integration_id: uuid.UUID, message_id: str, ticket_id: str | None
    ) -> MessageContext | None:
        """The integration, whether this message was accepted before (and the restore it
        returned), and the restore of this ticket if there is one: one round trip on the
        webhook's hot path (ids only; the restore is loaded when one is to be returned)."""
        params = {"integration_id": integration_id, "message_id": message_id, "ticket_id": ticket_id or ""}
        row = (await self.session.execute(_for_message(), params)).tuples().first()
        if row is None:
            return None
        integration, receipt_id, receipt_restore_id, ticket_restore_id = row
        return MessageContext(
            integration, receipt_id is not None, receipt_restore_id, ticket_id, ticket_restore_id
        )

    async def restore(self, restore_id: uuid.UUID) -> Restore | None:
        return (
            await self.session.execute(select(Restore).where(Restore.id == restore_id))
        ).scalar_one_or_none()

    async def add_receipt(self, receipt: WebhookReceipt) -> None:
        self.session.add(receipt)
        await self.session.flush()

    async def restore_for_ticket(self, integration_id: uuid.UUID, ticket_id: str) -> Restore | None:
        stmt = select(Restore).where(Restore.integration_id == integration_id, Restore.ticket_id == ticket_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def vm_name(self, vm_id: uuid.UUID, tenant_id: uuid.UUID) -> str | None:
        stmt = select(VirtualMachine.name).where(
            VirtualMachine.id == vm_id, VirtualMachine.tenant_id == tenant_id
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def point_of_vm(
        self, tenant_id: uuid.UUID, vm_id: uuid.UUID, point_id: uuid.UUID
    ) -> tuple[RestorePoint, VirtualMachine] | None:
        """The point and its VM, if it is one of this tenant's VM's."""
        params = {"tenant_id": tenant_id, "vm_id": vm_id, "point_id": point_id}
        row = (await self.session.execute(_point_of_vm(), params)).tuples().first()
        return (row[0], row[1]) if row is not None else None

    async def point_at(
        self, tenant_id: uuid.UUID, vm_id: uuid.UUID, kind: str, at: datetime
    ) -> tuple[RestorePoint, VirtualMachine] | None:
        """This tenant's VM's latest point of ``kind`` taken at or before ``at``, and the VM."""
        params = {"tenant_id": tenant_id, "vm_id": vm_id, "kind": kind, "at": at}
        row = (await self.session.execute(_point_at(), params)).tuples().first()
        return (row[0], row[1]) if row is not None else None

    # -- outbound: what to emit -------------------------------------------------------------------

    async def restores_to_follow(
        self, tenant_ids: Sequence[uuid.UUID], active_states: Sequence[str], ended_since: datetime
    ) -> list[tuple[Restore, str, int | None]]:
        """Active restores of these tenants and those that ended since ``ended_since``, with the
        VM's name and their RTO (the one their clocks were recorded with, else their policy's)."""
        out: list[tuple[Restore, str, int | None]] = []
        for part in _chunks(list(tenant_ids)):
            stmt = (
                select(Restore, VirtualMachine.name, func.coalesce(RestoreSla.rto_hours, Policy.rto_hours))
                .join(VirtualMachine, VirtualMachine.id == Restore.vm_id)
                .outerjoin(RestoreSla, RestoreSla.restore_id == Restore.id)
                .outerjoin(RestorePoint, RestorePoint.id == Restore.restore_point_id)
                .outerjoin(Policy, Policy.id == RestorePoint.policy_id)
                .where(
                    Restore.tenant_id.in_(part),
                    or_(Restore.state.in_(active_states), Restore.completed_at >= ended_since),
                )
                .order_by(Restore.requested_at, Restore.id)
            )
            out.extend((r, name, rto) for r, name, rto in (await self.session.execute(stmt)).tuples())
        return out


@dataclass(frozen=True)
class Emitted:
    """The messages a subject already has at one integration."""

    keys: frozenset[str]
    last_sequence: int


@dataclass(frozen=True)
class DueDelivery:
    delivery: Delivery
    url: str
    secret_encrypted: bytes


class DeliveryRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def emitted(
        self, integration_ids: Sequence[uuid.UUID], subjects: Sequence[str]
    ) -> dict[tuple[uuid.UUID, str], Emitted]:
        found: dict[tuple[uuid.UUID, str], tuple[set[str], int]] = {}
        if not integration_ids or not subjects:
            return {}
        for part in _chunks(list(subjects)):
            rows = await self.session.execute(
                select(
                    Delivery.integration_id, Delivery.subject, Delivery.event_key, Delivery.sequence
                ).where(Delivery.integration_id.in_(integration_ids), Delivery.subject.in_(part))
            )
            for integration_id, subject, key, sequence in rows.tuples():
                keys, last = found.setdefault((integration_id, subject), (set(), 0))
                keys.add(key)
                found[(integration_id, subject)] = (keys, max(last, sequence))
        return {k: Emitted(frozenset(keys), last) for k, (keys, last) in found.items()}

    async def insert(self, row: dict[str, Any]) -> bool:
        """One message; False when its event or its sequence number is taken (another emitter)."""
        return await insert_ignoring_conflicts(self.session, Delivery.__table__, [row]) == 1

    async def due(self, now: datetime, limit: int) -> list[DueDelivery]:
        """Pending messages that may be sent now: due, not leased, of an enabled integration with
        a URL, first of their subject (no earlier message of it is still pending), and alone in
        flight for their subject (a re-sent message waits for a later one being sent)."""
        earlier, other = _EARLIER, _OTHER
        blocked = (
            select(earlier.id)
            .where(
                earlier.integration_id == Delivery.integration_id,
                earlier.subject == Delivery.subject,
                earlier.sequence < Delivery.sequence,
                earlier.state == "pending",
            )
            .exists()
        )
        in_flight = (
            select(other.id)
            .where(
                other.integration_id == Delivery.integration_id,
                other.subject == Delivery.subject,
                other.id != Delivery.id,
                other.state == "pending",
                other.leased_until > now,
            )
            .exists()
        )
        stmt = (
            select(Delivery, Integration.url, Integration.secret_encrypted)
            .join(Integration, Integration.id == Delivery.integration_id)
            .where(
                Delivery.state == "pending",
                Delivery.next_attempt_at <= now,
                or_(Delivery.leased_until.is_(None), Delivery.leased_until <= now),
                Integration.enabled.is_(True),
                Integration.url.is_not(None),
                ~blocked,
                ~in_flight,
            )
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(limit)
        )
        stmt = lock_for_claim(stmt, self.session, Delivery)
        rows = (await self.session.execute(stmt)).tuples()
        return [DueDelivery(d, url, secret) for d, url, secret in rows if url is not None]

    async def claim(
        self, delivery_id: uuid.UUID, attempts: int, now: datetime, lease_until: datetime
    ) -> bool:
        """Compare-and-set: the message is ours for this attempt if nobody took it since we read it."""
        result = await self.session.execute(
            update(Delivery)
            .where(
                Delivery.id == delivery_id,
                Delivery.state == "pending",
                Delivery.attempts == attempts,
                or_(Delivery.leased_until.is_(None), Delivery.leased_until <= now),
            )
            .values(attempts=attempts + 1, leased_until=lease_until, last_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def finish(self, delivery_id: uuid.UUID, attempt: int, values: dict[str, Any]) -> bool:
        """Record an attempt's outcome, if this attempt still holds the message (its lease may
        have lapsed and another sender taken over: then that sender's outcome counts)."""
        result = await self.session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.attempts == attempt, Delivery.state == "pending")
            .values(leased_until=None, **values)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def expire(self, now: datetime) -> int:
        """Messages whose day is over without a successful attempt (e.g. the integration was
        disabled meanwhile) fail for good, so that the next messages of their subjects can go."""
        result = await self.session.execute(
            update(Delivery)
            .where(
                Delivery.state == "pending",
                Delivery.expires_at < now,
                or_(Delivery.leased_until.is_(None), Delivery.leased_until <= now),
            )
            .values(state="failed", last_error=func.coalesce(Delivery.last_error, "never sent"))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def list_page(
        self, integration_id: uuid.UUID, state: str | None, page: PageRequest
    ) -> tuple[list[Delivery], int]:
        stmt = select(Delivery).where(Delivery.integration_id == integration_id)
        if state is not None:
            stmt = stmt.where(Delivery.state == state)
        return await fetch_page(
            self.session, stmt, (Delivery.created_at.desc(), Delivery.sequence.desc(), Delivery.id), page
        )

    async def get(self, integration_id: uuid.UUID, delivery_id: uuid.UUID) -> Delivery | None:
        stmt = select(Delivery).where(
            and_(Delivery.id == delivery_id, Delivery.integration_id == integration_id)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()
