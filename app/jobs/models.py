from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, JSONType


class Job(IdMixin, Base):
    """One unit of work for a proxy. Its state changes only through the jobs repository's
    compare-and-set transitions."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_claimable", "state", "priority", "not_before", "created_at"),
        # A proxy's claim: its hosts' queued jobs, most urgent first, found by a range scan whatever
        # the queue's length (and whatever the planner's statistics say about it).
        Index("ix_jobs_dispatch", "state", "dispatch_host_id", "priority", "created_at"),
        Index("ix_jobs_vm_state", "vm_id", "state"),
        # A proxy's jobs (its running load; SET NULL when it is deleted). Queued jobs have no proxy
        # yet: leaving them out spares the planner an index entry for each job it queues.
        Index(
            "ix_jobs_proxy_id",
            "proxy_id",
            postgresql_where=text("proxy_id IS NOT NULL"),
            sqlite_where=text("proxy_id IS NOT NULL"),
        ),
        # Lists are newest first, often per tenant: without these, a page sorts the whole table.
        # Both end with id, the order's tie-break: a tick queues thousands of jobs at one instant.
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        # One scheduled job per VM, kind and schedule slot, whatever the number of planners.
        Index("uq_jobs_vm_kind_slot", "vm_id", "kind", "scheduled_for", unique=True),
        # At most one active backup per VM: a double click or a racing planner cannot queue two.
        Index(
            "uq_jobs_active_backup",
            "vm_id",
            unique=True,
            postgresql_where=text("kind = 'backup' AND state IN ('queued', 'running')"),
            sqlite_where=text("kind = 'backup' AND state IN ('queued', 'running')"),
        ),
        Index(
            "uq_jobs_active_app_backup",
            "vm_id",
            unique=True,
            postgresql_where=text("kind = 'app_backup' AND state IN ('queued', 'running')"),
            sqlite_where=text("kind = 'app_backup' AND state IN ('queued', 'running')"),
        ),
    )

    kind: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20))
    trigger: Mapped[str] = mapped_column(String(20))
    priority: Mapped[int] = mapped_column(Integer)
    # No index of its own: ix_jobs_tenant_created (tenant_id, created_at, id) serves every lookup by tenant.
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    vm_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vms.id"))
    policy_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("policies.id", ondelete="SET NULL"))
    restore_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("restores.id", ondelete="CASCADE"))
    target_host_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"))
    # The host whose proxies may take this queued job: the restore target, else the host the VM
    # runs on *now*. Set when the job is queued, kept in step by inventory syncs (VMs move) and
    # checked by the dispatch watch; null for guest agent jobs.
    dispatch_host_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column()
    created_by_key_id: Mapped[uuid.UUID | None] = mapped_column()
    not_before: Mapped[datetime] = mapped_column()
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    proxy_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("proxies.id", ondelete="SET NULL"))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    phase: Mapped[str | None] = mapped_column(String(40))
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_new: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_stored: Mapped[int] = mapped_column(BigInteger, default=0)
    progress_at: Mapped[datetime | None] = mapped_column()
    warnings: Mapped[list[str]] = mapped_column(JSONType, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(20))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    scheduled_for: Mapped[datetime | None] = mapped_column()
    window_end: Mapped[datetime | None] = mapped_column()
    waiting_reason: Mapped[str | None] = mapped_column(String(400))
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
