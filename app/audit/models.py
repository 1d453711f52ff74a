from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, JSONType


class AuditEvent(IdMixin, Base):
    """One mutating request or one authentication failure.

    No foreign keys on purpose: the record outlives the key, tenant or object it names.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at", "id"),
        Index("ix_audit_events_tenant_at", "tenant_id", "at"),
        # "What happened to this restore?" and "what did this key do?" without a scan.
        Index("ix_audit_events_object", "object_id"),
        Index("ix_audit_events_key_at", "key_id", "at"),
    )

    at: Mapped[datetime] = mapped_column()
    request_id: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(20))  # operator, customer, agent, integration, anonymous
    key_id: Mapped[uuid.UUID | None] = mapped_column()
    key_lookup_id: Mapped[str | None] = mapped_column(
        String(32)
    )  # the key's public part, also when it failed
    tenant_id: Mapped[uuid.UUID | None] = mapped_column()
    action: Mapped[str] = mapped_column(String(200))  # "POST /api/v1/restores/{restore_id}/approve"
    object_type: Mapped[str | None] = mapped_column(String(60))
    object_id: Mapped[str | None] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(20))  # success, denied (401/403), invalid (4xx), failed
    status: Mapped[int] = mapped_column(Integer)
    source_address: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
