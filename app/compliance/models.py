from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, JSONType

_OPEN = "ended_at IS NULL"


class ProtectionSpan(IdMixin, Base):
    """An interval during which a VM was protected by one policy. The RPO clock of a VM
    without a restore point starts with its span, and only protected time counts towards
    the share of time compliant. At most one open span per VM, whatever the number of
    recorders."""

    __tablename__ = "rpo_protection_spans"
    __table_args__ = (
        Index(
            "uq_rpo_protection_spans_open",
            "vm_id",
            unique=True,
            postgresql_where=text(_OPEN),
            sqlite_where=text(_OPEN),
        ),
        Index("ix_rpo_protection_spans_vm_started", "vm_id", "started_at"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    vm_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"))
    policy_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("policies.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()


class RpoBreach(IdMixin, Base):
    """An interval during which a protected VM's latest restore point was older than its
    policy's RPO. ``cause`` is the latest cause found while it was open, ``causes`` every
    cause seen, in order. At most one open breach per VM."""

    __tablename__ = "rpo_breaches"
    __table_args__ = (
        Index(
            "uq_rpo_breaches_open",
            "vm_id",
            unique=True,
            postgresql_where=text(_OPEN),
            sqlite_where=text(_OPEN),
        ),
        Index("ix_rpo_breaches_vm_started", "vm_id", "started_at"),
        Index("ix_rpo_breaches_tenant_started", "tenant_id", "started_at"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    vm_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"))
    policy_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("policies.id", ondelete="SET NULL"), index=True
    )
    rpo_hours: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    cause: Mapped[str] = mapped_column(String(40))
    causes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    detail: Mapped[str | None] = mapped_column(String(1000))
    resolution: Mapped[str | None] = mapped_column(String(40))
    updated_at: Mapped[datetime] = mapped_column()


class RestoreSla(Base):
    """The SLA clocks of one restore as last recorded by the SLA recorder: status of each
    clock and the instants it became at risk and breached (computed from the restore's
    timestamps, so re-recording never moves them)."""

    __tablename__ = "restore_slas"

    restore_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("restores.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    source_location: Mapped[str] = mapped_column(String(20))
    rto_hours: Mapped[int] = mapped_column(Integer)
    initiation_deadline_at: Mapped[datetime] = mapped_column()
    initiation_status: Mapped[str] = mapped_column(String(20))
    initiation_at_risk_at: Mapped[datetime | None] = mapped_column()
    initiation_breached_at: Mapped[datetime | None] = mapped_column()
    completion_deadline_at: Mapped[datetime] = mapped_column()
    completion_status: Mapped[str] = mapped_column(String(20))
    completion_at_risk_at: Mapped[datetime | None] = mapped_column()
    completion_breached_at: Mapped[datetime | None] = mapped_column()
    #: Both clocks settled (met, breached, failed or cancelled): the recorder skips it.
    settled: Mapped[bool] = mapped_column(default=False, index=True)
    updated_at: Mapped[datetime] = mapped_column()
