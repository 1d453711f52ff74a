"""All SQL about jobs. State changes go through :meth:`JobRepository.transition` only."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Select, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.dialect import lock_for_claim
from app.domain.jobs import (
    GUEST_JOB_KINDS,
    PRIORITY,
    AgentKind,
    JobKind,
    JobState,
    JobTrigger,
    can_transition,
)
from app.inventory.models import VirtualMachine, vm_datastores
from app.jobs.models import Job
from app.pagination import PageRequest
from app.proxies.models import Proxy, proxy_hosts


def queued_job_row(
    kind: JobKind,
    trigger: JobTrigger,
    tenant_id: uuid.UUID,
    vm_id: uuid.UUID,
    now: datetime,
    max_attempts: int,
    **columns: Any,
) -> dict[str, Any]:
    """A new queued job as a row for bulk inserts (the planner's, the reaper's), where the
    ORM's defaults do not apply."""
    return {
        "id": uuid.uuid4(),
        "kind": kind.value,
        "state": JobState.QUEUED.value,
        "trigger": trigger.value,
        "priority": PRIORITY[kind],
        "tenant_id": tenant_id,
        "vm_id": vm_id,
        "created_at": now,
        "not_before": now,
        "attempt": 0,
        "max_attempts": max_attempts,
        "cancel_requested": False,
        "bytes_total": 0,
        "bytes_read": 0,
        "bytes_new": 0,
        "bytes_stored": 0,
        "warnings": [],
        "params": {},
        "result": {},
        **columns,
    }


@dataclass(frozen=True)
class JobFilter:
    tenant_id: uuid.UUID | None = None
    vm_id: uuid.UUID | None = None
    policy_id: uuid.UUID | None = None
    kind: str | None = None
    state: str | None = None


class ClaimCandidate(NamedTuple):
    """What a claim needs to know of a queued job to choose it."""

    id: uuid.UUID
    kind: str
    vm_id: uuid.UUID
    restore_id: uuid.UUID | None
    priority: int
    created_at: datetime


_CANDIDATE_COLUMNS = (Job.id, Job.kind, Job.vm_id, Job.restore_id, Job.priority, Job.created_at)


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, job: Job) -> None:
        self.session.add(job)
        await self.session.flush()

    async def get(self, job_id: uuid.UUID, scope: uuid.UUID | None = None) -> Job | None:
        stmt = select(Job).where(Job.id == job_id)
        if scope is not None:
            stmt = stmt.where(Job.tenant_id == scope)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list_page(
        self, scope: uuid.UUID | None, f: JobFilter, page: PageRequest
    ) -> tuple[list[Job], int]:
        stmt = select(Job)
        for column, value in (
            (Job.tenant_id, scope),
            (Job.tenant_id, f.tenant_id),
            (Job.vm_id, f.vm_id),
            (Job.policy_id, f.policy_id),
            (Job.kind, f.kind),
            (Job.state, f.state),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        total = (await self.session.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
        rows = await self.session.execute(
            stmt.order_by(Job.created_at.desc(), Job.id).limit(page.limit).offset(page.offset)
        )
        return list(rows.scalars()), total

    async def active_backup(self, vm_id: uuid.UUID, kind: JobKind = JobKind.BACKUP) -> Job | None:
        stmt = select(Job).where(
            Job.vm_id == vm_id,
            Job.kind == kind.value,
            Job.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]),
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def running_for_proxy(self, proxy_id: uuid.UUID, now: datetime) -> int:
        """Jobs holding a live lease on this proxy (a lapsed one is not running anywhere)."""
        stmt = select(func.count()).where(
            Job.proxy_id == proxy_id, Job.state == JobState.RUNNING.value, Job.lease_expires_at >= now
        )
        return int((await self.session.execute(stmt)).scalar_one())

    def _claimable_queries(self, proxy: Proxy, now: datetime, limit: int) -> list[Select[tuple[Job]]]:
        """The queries whose union is what ``proxy`` may take now, each most urgent first.

        A job's host is decided at claim time (VMs move): the restore target host, else the host
        the VM runs on now. For a proxy of some hosts the search starts from those hosts (their
        VMs by ``vms.host_id``, then each VM's queued jobs by ``ix_jobs_vm_state``), so its cost
        follows the proxy's share of the queue, not the queue's length. Jobs whose lease lapsed
        come back through the reaper, which re-queues them.
        """
        due = and_(Job.state == JobState.QUEUED.value, Job.not_before <= now, Job.cancel_requested.is_(False))
        urgent_first = (Job.priority, Job.created_at, Job.id)
        guest_kinds = [k.value for k in GUEST_JOB_KINDS]
        if proxy.kind == AgentKind.GUEST.value:
            # A guest agent works for its own VM only (by ix_jobs_vm_state), and only on guest jobs.
            mine = select(Job).where(due, Job.vm_id == proxy.vm_id, Job.kind.in_(guest_kinds))
            return [mine.order_by(*urgent_first).limit(limit)]
        due = and_(due, Job.kind.not_in(guest_kinds))
        if proxy.serves_all_hosts:
            return [select(Job).where(due).order_by(*urgent_first).limit(limit)]
        served_hosts = select(proxy_hosts.c.host_id).where(proxy_hosts.c.proxy_id == proxy.id)
        return [
            select(Job)
            .where(due, Job.dispatch_host_id.in_(served_hosts))
            .order_by(*urgent_first)
            .limit(limit)
        ]

    async def refresh_dispatch_hosts(
        self, vm_ids: Sequence[uuid.UUID] | None = None, *, vcenter_id: uuid.UUID | None = None
    ) -> int:
        """Point queued proxy jobs (of ``vm_ids``, of a vCenter's VMs, or all) at their host of now:
        the restore target, else the VM's current host. Returns how many moved. Run after inventory
        syncs (VMs move)."""
        current = func.coalesce(
            Job.target_host_id,
            select(VirtualMachine.host_id).where(VirtualMachine.id == Job.vm_id).scalar_subquery(),
        )
        stmt = (
            update(Job)
            .where(
                Job.state == JobState.QUEUED.value,
                Job.kind.not_in([k.value for k in GUEST_JOB_KINDS]),
                Job.dispatch_host_id.is_distinct_from(current),
            )
            .values(dispatch_host_id=current)
            .execution_options(synchronize_session=False)
        )
        if vm_ids is not None:
            if not vm_ids:
                return 0
            stmt = stmt.where(Job.vm_id.in_(set(vm_ids)))
        if vcenter_id is not None:
            stmt = stmt.where(
                Job.vm_id.in_(select(VirtualMachine.id).where(VirtualMachine.vcenter_id == vcenter_id))
            )
        return int(getattr(await self.session.execute(stmt), "rowcount", 0) or 0)

    async def claimable(
        self, proxy: Proxy, now: datetime, limit: int, *, lock: bool = True
    ) -> list[ClaimCandidate]:
        """Jobs this proxy may take now, most urgent first; row-locked (skip locked) when ``lock``.

        Plain rows of the few columns a claim decides on, not ORM objects: a claim looks at up to
        ``free * 4 + 16`` candidates and takes one or two (each object cost as much CPU as a
        statement)."""
        found: list[ClaimCandidate] = []
        for stmt in self._claimable_queries(proxy, now, limit):
            rows = stmt.with_only_columns(*_CANDIDATE_COLUMNS)
            if lock:
                rows = lock_for_claim(rows, self.session, Job)
            found.extend(ClaimCandidate(*row) for row in (await self.session.execute(rows)).tuples())
        found.sort(key=lambda j: (j.priority, j.created_at, j.id))
        return found[:limit]

    async def any_claimable(self, proxy: Proxy, now: datetime) -> bool:
        """A lock-free peek, so that an idle long-poll never queues for the claim lock."""
        for stmt in self._claimable_queries(proxy, now, 1):
            if (await self.session.execute(stmt.with_only_columns(Job.id))).first() is not None:
                return True
        return False

    async def start_claimed(
        self, job_ids: list[uuid.UUID], proxy_id: uuid.UUID, now: datetime, lease_expires_at: datetime
    ) -> list[uuid.UUID]:
        """Queued → running for ``job_ids`` in one compare-and-set; returns the ids that moved.

        One statement for the whole claim keeps the claim lock's critical section short.
        """
        if not job_ids:
            return []
        assert can_transition(JobState.QUEUED, JobState.RUNNING)
        stmt = (
            update(Job)
            .where(Job.id.in_(job_ids), Job.state == JobState.QUEUED.value)
            .values(
                state=JobState.RUNNING.value,
                proxy_id=proxy_id,
                lease_expires_at=lease_expires_at,
                started_at=func.coalesce(Job.started_at, now),
                attempt=Job.attempt + 1,
                progress_at=now,
                phase="claimed",
            )
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def vm_host(self, vm_id: uuid.UUID) -> uuid.UUID | None:
        """The host a VM runs on now (a new proxy job's dispatch host)."""
        stmt = select(VirtualMachine.host_id).where(VirtualMachine.id == vm_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_many(self, job_ids: list[uuid.UUID]) -> list[Job]:
        if not job_ids:
            return []
        rows = await self.session.execute(
            select(Job).where(Job.id.in_(job_ids)).execution_options(populate_existing=True)
        )
        by_id = {job.id: job for job in rows.scalars()}
        return [by_id[i] for i in job_ids if i in by_id]

    async def running_backup_vm_ids(self, now: datetime) -> list[uuid.UUID]:
        rows = await self.session.execute(
            select(Job.vm_id).where(
                Job.kind == JobKind.BACKUP.value,
                Job.state == JobState.RUNNING.value,
                Job.lease_expires_at >= now,
            )
        )
        return list(rows.scalars())

    async def placement(
        self, vm_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[uuid.UUID | None, set[uuid.UUID]]]:
        """Where VMs run now: their host and datastores (what concurrency limits count)."""
        if not vm_ids:
            return {}
        unique = set(vm_ids)
        hosts = await self.session.execute(
            select(VirtualMachine.id, VirtualMachine.host_id).where(VirtualMachine.id.in_(unique))
        )
        out: dict[uuid.UUID, tuple[uuid.UUID | None, set[uuid.UUID]]] = {
            vm_id: (host_id, set()) for vm_id, host_id in hosts.tuples()
        }
        stores = await self.session.execute(
            select(vm_datastores.c.vm_id, vm_datastores.c.datastore_id).where(
                vm_datastores.c.vm_id.in_(unique)
            )
        )
        for vm_id, datastore_id in stores.tuples():
            if vm_id in out:
                out[vm_id][1].add(datastore_id)
        return out

    async def transition(
        self,
        job: Job,
        target: JobState,
        *,
        expect_proxy: uuid.UUID | None = None,
        **values: Any,
    ) -> bool:
        """Compare-and-set ``job`` from the state it was read in to ``target``.

        Zero rows updated means someone else changed it first (another claimer, the reaper,
        a cancel): the caller lost and must not act as if it had won.
        """
        current = JobState(job.state)
        if not can_transition(current, target):
            return False
        stmt = update(Job).where(Job.id == job.id, Job.state == current.value, Job.attempt == job.attempt)
        if expect_proxy is not None:
            stmt = stmt.where(Job.proxy_id == expect_proxy)
        # RETURNING the row refreshes ``job`` in place (populate_existing): no SELECT after.
        stmt = (
            stmt.values(state=target.value, **values)
            .returning(Job)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none() is not None

    async def update_progress(self, job_id: uuid.UUID, proxy_id: uuid.UUID, **values: Any) -> bool:
        result = await self.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.proxy_id == proxy_id, Job.state == JobState.RUNNING.value)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)
