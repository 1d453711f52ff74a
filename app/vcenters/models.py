from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, TimestampMixin


class VCenter(IdMixin, TimestampMixin, Base):
    """A registered vCenter. Credentials are one encrypted blob, never returned."""

    __tablename__ = "vcenters"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(String(500))
    verify_tls: Mapped[bool] = mapped_column(default=True)
    credentials_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    credentials_updated_at: Mapped[datetime] = mapped_column()
    connection_status: Mapped[str] = mapped_column(String(20), default="unknown")
    last_error_kind: Mapped[str | None] = mapped_column(String(40))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_checked_at: Mapped[datetime | None] = mapped_column()
    last_sync_at: Mapped[datetime | None] = mapped_column()
    last_sync_status: Mapped[str | None] = mapped_column(String(20))
    sync_claimed_until: Mapped[datetime | None] = mapped_column()
    product: Mapped[str | None] = mapped_column(String(200))
    api_version: Mapped[str | None] = mapped_column(String(40))
    instance_uuid: Mapped[str | None] = mapped_column(String(64))
