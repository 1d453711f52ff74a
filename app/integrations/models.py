from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, JSONType, TimestampMixin


class Integration(IdMixin, TimestampMixin, Base):
    """A ticketing or monitoring system connected in both directions, with one signing secret.

    A tenant's integration sends restore requests in (``POST /webhooks/tickets``) and receives its
    restores' state changes out; an operators' integration (``tenant_id`` null) receives the
    monitoring alerts of every tenant. The secret (Standard Webhooks ``whsec_…``) is stored
    encrypted with the service's key and shown once.
    """

    __tablename__ = "integrations"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str | None] = mapped_column(String(2000))  # where outbound messages go; null: inbound only
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    events: Mapped[list[str]] = mapped_column(JSONType, default=list)  # outbound event types; empty: all
    enabled: Mapped[bool] = mapped_column(default=True)


class WebhookReceipt(IdMixin, Base):
    """An inbound message accepted once: replays of its id return what the first delivery made."""

    __tablename__ = "webhook_receipts"
    __table_args__ = (UniqueConstraint("integration_id", "message_id"),)

    integration_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("integrations.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(String(255))
    ticket_id: Mapped[str] = mapped_column(String(255))
    restore_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("restores.id", ondelete="SET NULL"))
    received_at: Mapped[datetime] = mapped_column()


class Delivery(IdMixin, Base):
    """One outbound message to one integration, retried until delivered or a day has passed.

    ``subject`` groups messages that must arrive in order (a restore's id, an alert's id): the next
    one of a subject is sent only once the previous one is delivered or has failed for good.
    ``event_key`` makes emitting idempotent (several replicas, restarts): one message per
    (integration, subject, event_key). A sender holds ``leased_until`` while the message is in
    flight (claimed with compare-and-set on ``attempts``), so replicas never send it at once.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("integration_id", "subject", "event_key"),
        # Two emitters never give one number to two messages of a subject: the loser's insert is
        # skipped and emitted again on its next tick, after the winner's (order is kept).
        UniqueConstraint("integration_id", "subject", "sequence"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_log", "integration_id", "created_at"),
    )

    integration_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("integrations.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(100))
    sequence: Mapped[int] = mapped_column(Integer)  # order within the subject
    event_key: Mapped[str] = mapped_column(String(100))
    event_type: Mapped[str] = mapped_column(String(60))
    message_id: Mapped[str] = mapped_column(String(64))  # webhook-id: the same on every attempt
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    state: Mapped[str] = mapped_column(String(20))  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # ``attempts`` at the last resend (0 if never resent):
    # the backoff counts from here, so a resent message is retried after seconds, not an hour.
    attempts_before_resend: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column()
    next_attempt_at: Mapped[datetime] = mapped_column()
    # Retries stop here (a day after the event, or after a resend): the message is then failed.
    expires_at: Mapped[datetime] = mapped_column()
    leased_until: Mapped[datetime | None] = mapped_column()
    last_attempt_at: Mapped[datetime | None] = mapped_column()
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column()
