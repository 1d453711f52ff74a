from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, LargeBinary, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, JSONType


class Restore(IdMixin, Base):
    """A restore request and its SLA clocks: requested, initiated (a proxy started work),
    completed."""

    __tablename__ = "restores"
    __table_args__ = (UniqueConstraint("integration_id", "ticket_id"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    vm_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vms.id"), index=True)
    # Set null when retention prunes the point after the restore ended; the record keeps when
    # the point was taken, for history and SLA reports.
    restore_point_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("restore_points.id", ondelete="SET NULL"), index=True
    )
    restore_point_created_at: Mapped[datetime | None] = mapped_column()
    type: Mapped[str] = mapped_column(String(20))
    target: Mapped[str] = mapped_column(String(20))
    target_params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    state: Mapped[str] = mapped_column(String(20))
    source_location: Mapped[str] = mapped_column(String(20))
    requested_at: Mapped[datetime] = mapped_column()
    requested_by_key_id: Mapped[uuid.UUID | None] = mapped_column()
    initiated_at: Mapped[datetime | None] = mapped_column()
    completed_at: Mapped[datetime | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Secrets a restore needs (guest OS credentials for pushing files into a VM), encrypted with the
    # service's key, handed to the agent with the job and erased when the restore ends.
    secrets_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Restores asked for by a ticketing system: one per (integration, ticket), whatever the retries.
    integration_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("integrations.id", ondelete="SET NULL")
    )
    ticket_id: Mapped[str | None] = mapped_column(String(255))
    # Restores over an existing VM wait for an operator (unless the tenant waives it); the wait
    # counts against the SLA clocks, which run from requested_at.
    approval_required: Mapped[bool] = mapped_column(default=False, server_default=false())
    decided_at: Mapped[datetime | None] = mapped_column()
    decided_by_key_id: Mapped[uuid.UUID | None] = mapped_column()
