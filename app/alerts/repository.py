"""All SQL of the alerts: the ``alerts`` rows, and the catalog reads that find conditions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts.models import Alert
from app.compliance.models import RpoBreach
from app.db.dialect import insert_ignoring_conflicts
from app.db.paging import fetch_page
from app.domain.jobs import JobKind, JobState
from app.domain.protection import ProtectionStatus
from app.inventory.models import Datastore, VirtualMachine
from app.jobs.models import Job
from app.jobs.repository import JobRepository
from app.pagination import PageRequest
from app.policies.models import Policy
from app.proxies.models import Proxy

_CHUNK = 500
#: Job states that end a backup attempt for good (cancelled ones say nothing about the VM).
BACKUP_OUTCOMES = (JobState.SUCCEEDED, JobState.FAILED, JobState.SKIPPED, JobState.MISSED)
BACKUP_KINDS = (JobKind.BACKUP, JobKind.APP_BACKUP)
#: The warning a backup reports when it could not remove its snapshot (app/agent/runners/backup.py).
SNAPSHOT_NOT_REMOVED = "snapshot could not be removed"


class AlertRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def open_alerts(self, kinds: Sequence[str]) -> list[Alert]:
        stmt = select(Alert).where(Alert.closed_at.is_(None), Alert.kind.in_(list(kinds)))
        return list((await self.session.execute(stmt)).scalars())

    async def open_by_key(self, key: str) -> Alert | None:
        stmt = select(Alert).where(Alert.key == key, Alert.closed_at.is_(None))
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def open_new(self, rows: list[dict[str, Any]]) -> list[Alert]:
        """Insert open alerts, skipping keys another evaluator opened meanwhile (the partial
        unique index decides); returns the alerts this call opened."""
        if not rows:
            return []
        await insert_ignoring_conflicts(self.session, Alert.__table__, rows)
        ids = [row["id"] for row in rows]
        opened: list[Alert] = []
        for start in range(0, len(ids), _CHUNK):
            stmt = select(Alert).where(Alert.id.in_(ids[start : start + _CHUNK]))
            opened.extend((await self.session.execute(stmt)).scalars())
        return opened

    async def close(self, alert_id: uuid.UUID, at: datetime) -> bool:
        """Compare-and-set: only one evaluator closes an alert (and announces it)."""
        result = await self.session.execute(
            update(Alert)
            .where(Alert.id == alert_id, Alert.closed_at.is_(None))
            .values(closed_at=at)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    async def revise(
        self, alert_id: uuid.UUID, from_severity: str, severity: str, message: str, detail: dict[str, Any]
    ) -> bool:
        """Compare-and-set on the open alert and the severity it was read with."""
        result = await self.session.execute(
            update(Alert)
            .where(Alert.id == alert_id, Alert.closed_at.is_(None), Alert.severity == from_severity)
            .values(severity=severity, message=message, detail=detail)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    async def list_page(
        self,
        scope: uuid.UUID | None,
        state: str,
        kind: str | None,
        tenant_id: uuid.UUID | None,
        page: PageRequest,
    ) -> tuple[list[Alert], int]:
        stmt = select(Alert)
        if state == "open":
            stmt = stmt.where(Alert.closed_at.is_(None))
        elif state == "closed":
            stmt = stmt.where(Alert.closed_at.is_not(None))
        for column, value in ((Alert.tenant_id, scope), (Alert.tenant_id, tenant_id), (Alert.kind, kind)):
            if value is not None:
                stmt = stmt.where(column == value)
        return await fetch_page(self.session, stmt, (Alert.opened_at.desc(), Alert.id.desc()), page)


@dataclass(frozen=True)
class WatchedVm:
    id: uuid.UUID
    name: str
    tenant_id: uuid.UUID
    protected: bool
    #: Its policy backs up applications through the guest agent too.
    applications: bool = False


@dataclass(frozen=True)
class BackupOutcome:
    """The latest ended backup of one kind (image or application) of one VM."""

    vm_id: uuid.UUID
    kind: str
    job_id: uuid.UUID
    state: str
    error: str | None
    finished_at: datetime


@dataclass(frozen=True)
class SnapshotEvidence:
    """A job that says whether a backup snapshot is left on a VM: a backup that could not
    remove its own, or a clean-up job (failed: still there; succeeded: gone)."""

    vm_id: uuid.UUID
    tenant_id: uuid.UUID
    job_id: uuid.UUID
    kind: str
    state: str
    finished_at: datetime
    proxy_id: uuid.UUID | None
    policy_id: uuid.UUID | None
    params: dict[str, Any]
    attempt: int


class ConditionRepository:
    """Reads of the catalog that find the conditions alerts are about."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def vms(self, vm_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, WatchedVm]:
        """The VMs among ``vm_ids`` still in the inventory."""
        out: dict[uuid.UUID, WatchedVm] = {}
        ids = list(dict.fromkeys(vm_ids))
        for start in range(0, len(ids), _CHUNK):
            rows = await self.session.execute(
                select(
                    VirtualMachine.id,
                    VirtualMachine.name,
                    VirtualMachine.tenant_id,
                    VirtualMachine.protection_status,
                    Policy.applications,
                )
                .outerjoin(Policy, Policy.id == VirtualMachine.protection_policy_id)
                .where(VirtualMachine.id.in_(ids[start : start + _CHUNK]), VirtualMachine.gone_at.is_(None))
            )
            for vm_id, name, tenant_id, status, applications in rows.tuples():
                protected = status == ProtectionStatus.PROTECTED.value
                out[vm_id] = WatchedVm(vm_id, name, tenant_id, protected, protected and bool(applications))
        return out

    async def latest_backup_outcomes(self, since: datetime) -> list[BackupOutcome]:
        """Per VM and backup kind, the latest backup that ended (not cancelled) since ``since``."""
        rank = func.row_number().over(
            partition_by=(Job.vm_id, Job.kind), order_by=(Job.finished_at.desc(), Job.id.desc())
        )
        ranked = (
            select(Job.vm_id, Job.kind, Job.id, Job.state, Job.error, Job.finished_at, rank.label("rank"))
            .where(
                Job.kind.in_([k.value for k in BACKUP_KINDS]),
                Job.state.in_([s.value for s in BACKUP_OUTCOMES]),
                Job.finished_at >= since,
            )
            .subquery()
        )
        rows = await self.session.execute(
            select(
                ranked.c.vm_id,
                ranked.c.kind,
                ranked.c.id,
                ranked.c.state,
                ranked.c.error,
                ranked.c.finished_at,
            ).where(ranked.c.rank == 1)
        )
        return [BackupOutcome(*row) for row in rows.tuples()]

    async def open_breaches(self) -> list[tuple[RpoBreach, str]]:
        rows = await self.session.execute(
            select(RpoBreach, VirtualMachine.name)
            .join(VirtualMachine, VirtualMachine.id == RpoBreach.vm_id)
            .where(RpoBreach.ended_at.is_(None))
        )
        return [(breach, name) for breach, name in rows.tuples()]

    async def proxies(self) -> list[tuple[uuid.UUID, str, datetime | None]]:
        """Registered proxies (guest agents are not infrastructure: a VM's owner turns them off)."""
        rows = await self.session.execute(
            select(Proxy.id, Proxy.name, Proxy.last_heartbeat_at).where(Proxy.kind == "proxy")
        )
        return list(rows.tuples())

    async def low_datastores(self) -> list[Datastore]:
        stmt = select(Datastore).where(
            Datastore.gone_at.is_(None), Datastore.space_status.in_(["warning", "critical"])
        )
        return list((await self.session.execute(stmt)).scalars())

    async def snapshot_evidence(self, since: datetime) -> list[SnapshotEvidence]:
        """Backups since ``since`` that could not remove their snapshot, and clean-ups that ended."""
        not_removed = (Job.kind == JobKind.BACKUP.value) & cast(Job.warnings, Text).like(
            f"%{SNAPSHOT_NOT_REMOVED}%"
        )
        cleanup_ended = (Job.kind == JobKind.SNAPSHOT_CLEANUP.value) & Job.state.in_(
            [JobState.SUCCEEDED.value, JobState.FAILED.value]
        )
        rows = await self.session.execute(
            select(
                Job.vm_id,
                Job.tenant_id,
                Job.id,
                Job.kind,
                Job.state,
                Job.finished_at,
                Job.proxy_id,
                Job.policy_id,
                Job.params,
                Job.attempt,
            ).where(Job.finished_at >= since, or_(not_removed, cleanup_ended))
        )
        return [SnapshotEvidence(*row) for row in rows.tuples()]

    async def vms_with_cleanup_pending(self, vm_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        out: set[uuid.UUID] = set()
        ids = list(vm_ids)
        for start in range(0, len(ids), _CHUNK):
            rows = await self.session.execute(
                select(Job.vm_id).where(
                    Job.vm_id.in_(ids[start : start + _CHUNK]),
                    Job.kind == JobKind.SNAPSHOT_CLEANUP.value,
                    Job.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]),
                )
            )
            out.update(rows.scalars())
        return out

    async def queue_cleanups(self, rows: list[dict[str, Any]]) -> int:
        """Queue snapshot clean-up jobs; the unique (VM, kind, scheduled_for) index makes a
        repeated evaluation (or another replica's) queue each one once."""
        queued = await insert_ignoring_conflicts(self.session, Job.__table__, rows)
        if queued:
            await JobRepository(self.session).refresh_dispatch_hosts([row["vm_id"] for row in rows])
        return queued
