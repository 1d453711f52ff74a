from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, JSONType


class RestorePoint(IdMixin, Base):
    """A VM's restorable state at one instant. The repository holds the data and a manifest
    under the same id; this row is the catalog's index of it (rebuildable from the manifest)."""

    __tablename__ = "restore_points"
    __table_args__ = (
        Index("ix_restore_points_vm_created", "vm_id", "created_at"),
        Index("ix_restore_points_tenant_created", "tenant_id", "created_at"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    vm_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vms.id"))
    policy_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("policies.id", ondelete="SET NULL"))
    # No foreign key: jobs are housekeeping that may be pruned; the point outlives them.
    job_id: Mapped[uuid.UUID | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column()
    vm_name: Mapped[str] = mapped_column(String(400))
    location: Mapped[str] = mapped_column(String(20), default="onsite")
    consistency: Mapped[str] = mapped_column(String(20))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    bytes_read: Mapped[int] = mapped_column(BigInteger)
    bytes_new: Mapped[int] = mapped_column(BigInteger)
    bytes_stored: Mapped[int] = mapped_column(BigInteger)
    disks: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    # "image" (disks, through a proxy) or "application" (streams: dumps and file sets, through the
    # VM's guest agent). Retention counts each kind on its own.
    kind: Mapped[str] = mapped_column(String(20), default="image", server_default="image")
    streams: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list, server_default="[]")
    # The offsite copy: none (policy without copies), copying, offsite (complete), copy_failed.
    copy_status: Mapped[str] = mapped_column(String(20), default="none", server_default="none")
    copy_error: Mapped[str | None] = mapped_column(Text)
    copied_at: Mapped[datetime | None] = mapped_column()
    # Onsite retention removed the onsite manifest; the point lives on in its offsite copy (the row
    # goes when offsite retention removes that too).
    onsite_removed_at: Mapped[datetime | None] = mapped_column()
    used_cbt: Mapped[bool] = mapped_column(default=False)
    warnings: Mapped[list[str]] = mapped_column(JSONType, default=list)
