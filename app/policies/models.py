from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, JSONType, TimestampMixin


class Policy(IdMixin, TimestampMixin, Base):
    """A protection policy. Structured parts (schedule, window, retention, selection) are JSON
    validated by the pydantic schemas, because they are read and written whole."""

    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(default=True)
    schedule: Mapped[dict[str, Any]] = mapped_column(JSONType)
    timezone: Mapped[str] = mapped_column(String(64))
    backup_window: Mapped[dict[str, Any]] = mapped_column(JSONType)
    rpo_hours: Mapped[int] = mapped_column(Integer)
    # When rpo_hours last changed: a breach the new RPO makes starts no earlier (the VM met the
    # RPO it had until then). Null: unchanged since the policy was created.
    rpo_changed_at: Mapped[datetime | None] = mapped_column()
    rto_hours: Mapped[int] = mapped_column(Integer)
    retention: Mapped[dict[str, Any]] = mapped_column(JSONType)
    offsite_copy: Mapped[bool] = mapped_column(default=False)
    # GFS counts of the offsite copies (usually longer than onsite); null: the onsite ones.
    offsite_retention: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    application_aware: Mapped[bool] = mapped_column(default=False)
    retry_count: Mapped[int] = mapped_column(Integer, default=3)
    selection: Mapped[dict[str, Any]] = mapped_column(JSONType)
    exclusions: Mapped[dict[str, Any]] = mapped_column(JSONType)
    last_planned_slot: Mapped[datetime | None] = mapped_column()
    # Application backups through the VM's guest agent: their own schedule, window, retention and
    # items (validated by ApplicationProtection); null when the policy protects images only.
    applications: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    last_planned_app_slot: Mapped[datetime | None] = mapped_column()
