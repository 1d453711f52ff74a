from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, JSONType


class Alert(IdMixin, Base):
    """A condition that needs an operator (a backup failed, a proxy is offline, ...).

    ``key`` identifies the condition ("backup_failed:<vm id>"): at most one open alert per key, so
    re-evaluating a condition never opens it twice; it closes itself when the condition clears.
    """

    __tablename__ = "alerts"
    __table_args__ = (
        Index(
            "uq_alerts_open_key",
            "key",
            unique=True,
            postgresql_where=text("closed_at IS NULL"),
            sqlite_where=text("closed_at IS NULL"),
        ),
        Index("ix_alerts_opened", "opened_at"),
    )

    key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(20))  # warning, critical
    tenant_id: Mapped[uuid.UUID | None] = mapped_column()
    subject_type: Mapped[str | None] = mapped_column(String(40))  # vm, proxy, datastore, repository
    subject_id: Mapped[str | None] = mapped_column(String(100))
    message: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    opened_at: Mapped[datetime] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column()
