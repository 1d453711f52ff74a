from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, JSONType


class ChangeRequest(IdMixin, Base):
    """A customer's request to change protection: edit a policy, protect or unprotect VMs, or a new
    policy. Applied atomically on approval; the history stays readable."""

    __tablename__ = "change_requests"
    __table_args__ = (Index("ix_change_requests_tenant_created", "tenant_id", "created_at"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(30))  # policy_update, policy_create, protect, unprotect
    policy_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("policies.id", ondelete="SET NULL"))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    comment: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))  # pending, approved, rejected, cancelled
    requested_by_key_id: Mapped[uuid.UUID | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column()
    decided_by_key_id: Mapped[uuid.UUID | None] = mapped_column()
    decided_at: Mapped[datetime | None] = mapped_column()
    reason: Mapped[str | None] = mapped_column(Text)  # why rejected (or a note on approval)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # what the approval applied
