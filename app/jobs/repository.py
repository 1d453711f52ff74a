"""All SQL about jobs. State changes go through :meth:`JobRepository.transition` only."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, Update, and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.paging import fetch_page
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


@dataclass
class VmHolds:
    """What holds work on VMs back, besides the limits (see :meth:`JobRepository.vm_holds`)."""

    overwritten: set[uuid.UUID]
    """A restore over the VM runs, or failed midway and waits to retry (its disks half written)."""
    cleaning: set[uuid.UUID]
    """A clean-up of a lost proxy's snapshot is queued or runs (a restore over it would fail)."""


@dataclass(frozen=True)
class Saturation:
    """What the concurrency limits admit no further backup on, during a claim."""

    everything: bool
    hosts: set[uuid.UUID]
    datastores: set[uuid.UUID]


class ClaimCandidate(NamedTuple):
    """What a claim needs to know of a queued job to choose it."""

    id: uuid.UUID
    kind: str
    vm_id: uuid.UUID
    restore_id: uuid.UUID | None
    priority: int
    created_at: datetime
    target_host_id: uuid.UUID | None

    @property
    def overwrites_vm(self) -> bool:
        return overwrites_vm(self.kind, self.target_host_id)


def overwrites_vm(kind: str, target_host_id: uuid.UUID | None) -> bool:
    """A whole-VM restore over the VM itself (one to a new VM names its target host)."""
    return kind == JobKind.RESTORE.value and target_host_id is None


_CANDIDATE_COLUMNS = (
    Job.id,
    Job.kind,
    Job.vm_id,
    Job.restore_id,
    Job.priority,
    Job.created_at,
    Job.target_host_id,
)

# The agent channel's statements are built once, with bound parameters, on first use: a claim
# or a completion runs a dozen of them, and building one and computing its cache key cost more
# CPU than PostgreSQL spends running it (docs/benchmarks.md, scheduler, sixth round). Not at
# import: a foreign-key column takes its type from the column it references only once that
# table is loaded, and a parameter compared with it earlier stays untyped (SQLite then cannot
# bind a UUID).


@functools.cache
def _job_by_id(scoped: bool) -> Select[tuple[Job]]:
    stmt = select(Job).where(Job.id == bindparam("job_id"))
    return stmt.where(Job.tenant_id == bindparam("scope")) if scoped else stmt


@functools.cache
def _jobs_by_ids() -> Select[tuple[Job]]:
    return (
        select(Job)
        .where(Job.id.in_(bindparam("job_ids", expanding=True)))
        .execution_options(populate_existing=True)
    )


# A running job counts against the limits until it ends or the reaper takes it back, also once
# its lease lapsed: its proxy may only be late (a report after the lapse keeps the job going), and
# a slot given away at the lapse would run two backups where the limit allows one.


@functools.cache
def _running_on_proxy() -> Select[tuple[int]]:
    return select(func.count()).where(
        Job.proxy_id == bindparam("proxy_id"),
        Job.state == JobState.RUNNING.value,
    )


@functools.cache
def _running_load() -> Select[tuple[uuid.UUID, str, uuid.UUID | None]]:
    return select(Job.vm_id, Job.kind, Job.proxy_id).where(
        Job.state == JobState.RUNNING.value,
        or_(Job.kind == JobKind.BACKUP.value, Job.proxy_id == bindparam("proxy_id")),
    )


@functools.cache
def _vm_holds() -> Select[tuple[uuid.UUID, str, str, uuid.UUID | None, int]]:
    # By ix_jobs_vm_state: the candidates' VMs only, never a scan of the queue.
    return select(Job.vm_id, Job.kind, Job.state, Job.target_host_id, Job.attempt).where(
        Job.vm_id.in_(bindparam("vm_ids", expanding=True)),
        Job.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]),
        Job.kind.in_([JobKind.RESTORE.value, JobKind.SNAPSHOT_CLEANUP.value]),
    )


@functools.cache
def _claimable(scope: str, columns: str) -> Select[Any]:
    """What a proxy may take now, most urgent first (see :meth:`JobRepository.claimable`).

    ``scope``: ``guest`` (an agent's own VM), ``all`` (a proxy of every host) or ``hosts`` (the
    proxy's hosts). ``columns``: ``peek`` (ids, no locks) or ``claim`` (candidate columns,
    row-locked, skip locked; SQLite renders no lock, its write lock serialises claims).
    Parameters: ``now``, ``limit``, and ``vm_id`` or ``proxy_id`` by scope.
    """
    due = and_(
        Job.state == JobState.QUEUED.value,
        Job.not_before <= bindparam("now"),
        Job.cancel_requested.is_(False),
        # A backup whose window has closed is not started, even in the seconds before the
        # reaper ends it as missed.
        or_(Job.window_end.is_(None), Job.window_end > bindparam("now")),
    )
    guest_kinds = [k.value for k in GUEST_JOB_KINDS]
    if scope == "guest":
        # A guest agent works for its own VM only (by ix_jobs_vm_state), and only on guest jobs.
        where = and_(due, Job.vm_id == bindparam("vm_id"), Job.kind.in_(guest_kinds))
    elif scope == "all":
        where = and_(due, Job.kind.not_in(guest_kinds))
    else:
        served = select(proxy_hosts.c.host_id).where(proxy_hosts.c.proxy_id == bindparam("proxy_id"))
        where = and_(due, Job.kind.not_in(guest_kinds), Job.dispatch_host_id.in_(served))
    stmt = (
        select(*(_CANDIDATE_COLUMNS if columns == "claim" else (Job.id,)))
        .where(where)
        .order_by(Job.priority, Job.created_at, Job.id)
        .limit(bindparam("limit"))
    )
    return stmt.with_for_update(skip_locked=True, of=Job) if columns == "claim" else stmt


@functools.cache
def _start_claimed() -> Update:
    assert can_transition(JobState.QUEUED, JobState.RUNNING)
    return (
        update(Job)
        .where(Job.id.in_(bindparam("job_ids", expanding=True)), Job.state == JobState.QUEUED.value)
        .values(
            state=JobState.RUNNING.value,
            proxy_id=bindparam("to_proxy"),
            lease_expires_at=bindparam("lease_until"),
            started_at=func.coalesce(Job.started_at, bindparam("at")),
            attempt=Job.attempt + 1,
            progress_at=bindparam("at"),
            phase="claimed",
        )
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )


@functools.lru_cache(maxsize=64)
def _transition(
    current: str, target: str, expect_proxy: bool, expect_lapsed: bool, columns: tuple[str, ...]
) -> Update:
    """A compare-and-set of a job's state, by the columns it sets (few combinations: one per call
    site). Parameters: ``job_id``, ``from_attempt``, ``expect_proxy``, ``lapsed_by`` and
    ``set_<column>``."""
    stmt = update(Job).where(
        Job.id == bindparam("job_id"), Job.state == current, Job.attempt == bindparam("from_attempt")
    )
    if expect_proxy:
        stmt = stmt.where(Job.proxy_id == bindparam("expect_proxy"))
    if expect_lapsed:
        stmt = stmt.where(Job.lease_expires_at < bindparam("lapsed_by"))
    # RETURNING the row refreshes the job in place (populate_existing): no SELECT after.
    return (
        stmt.values(state=target, **{c: bindparam(f"set_{c}") for c in columns})
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


@functools.lru_cache(maxsize=16)
def _progress(columns: tuple[str, ...]) -> Update:
    return (
        update(Job)
        .where(
            Job.id == bindparam("job_id"),
            Job.proxy_id == bindparam("on_proxy"),
            Job.state == JobState.RUNNING.value,
            Job.attempt == bindparam("in_attempt"),
        )
        .values({c: bindparam(f"set_{c}") for c in columns})
        .execution_options(synchronize_session=False)
    )


@functools.cache
def _vm_hosts() -> Select[tuple[uuid.UUID, uuid.UUID | None]]:
    return select(VirtualMachine.id, VirtualMachine.host_id).where(
        VirtualMachine.id.in_(bindparam("vm_ids", expanding=True))
    )


@functools.cache
def _vm_datastores() -> Select[tuple[uuid.UUID, uuid.UUID]]:
    return select(vm_datastores.c.vm_id, vm_datastores.c.datastore_id).where(
        vm_datastores.c.vm_id.in_(bindparam("vm_ids", expanding=True))
    )


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, job: Job, *, flush: bool = True) -> None:
        """``flush=False``: the caller flushes it with what it adds next (one flush, not two)."""
        self.session.add(job)
        if flush:
            await self.session.flush()

    async def get(self, job_id: uuid.UUID, scope: uuid.UUID | None = None) -> Job | None:
        params = {"job_id": job_id, "scope": scope}
        return (await self.session.execute(_job_by_id(scope is not None), params)).scalar_one_or_none()

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
        # Both keys descending: the list indexes end with (created_at, id), read backwards.
        return await fetch_page(self.session, stmt, (Job.created_at.desc(), Job.id.desc()), page)

    async def active_backup(self, vm_id: uuid.UUID, kind: JobKind = JobKind.BACKUP) -> Job | None:
        stmt = select(Job).where(
            Job.vm_id == vm_id,
            Job.kind == kind.value,
            Job.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]),
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def running_for_proxy(self, proxy_id: uuid.UUID) -> int:
        """Jobs running on this proxy (a lapsed lease too, until the reaper takes the job back)."""
        params = {"proxy_id": proxy_id}
        return int((await self.session.execute(_running_on_proxy(), params)).scalar_one())

    async def running_load(self, proxy_id: uuid.UUID) -> tuple[int, list[uuid.UUID]]:
        """What a claim counts, in one statement: jobs running on this proxy, and the VMs of every
        backup running anywhere (per host and datastore limits)."""
        rows = await self.session.execute(_running_load(), {"proxy_id": proxy_id})
        own, backups = 0, []
        for vm_id, kind, on_proxy in rows.tuples():
            own += on_proxy == proxy_id
            if kind == JobKind.BACKUP.value:
                backups.append(vm_id)
        return own, backups

    async def vm_holds(self, vm_ids: Collection[uuid.UUID]) -> VmHolds:
        """Of these VMs, those a restore is overwriting (no backup may snapshot them) and those
        with a snapshot clean-up to come (no restore may write over them yet)."""
        holds = VmHolds(set(), set())
        if not vm_ids:
            return holds
        rows = await self.session.execute(_vm_holds(), {"vm_ids": list(vm_ids)})
        for vm_id, kind, state, target_host_id, attempt in rows.tuples():
            if kind == JobKind.SNAPSHOT_CLEANUP.value:
                holds.cleaning.add(vm_id)
            elif overwrites_vm(kind, target_host_id) and (state == JobState.RUNNING.value or attempt > 0):
                holds.overwritten.add(vm_id)
        return holds

    @staticmethod
    def _claim_scope(proxy: Proxy) -> tuple[str, dict[str, Any]]:
        """Which of :func:`_claimable`'s searches is the proxy's, and its parameters.

        A job's host is decided at claim time (VMs move): the restore target host, else the host
        the VM runs on now (``dispatch_host_id``, kept current by inventory syncs). For a proxy
        of some hosts the search starts from those hosts, so its cost follows the proxy's share
        of the queue, not the queue's length. Jobs whose lease lapsed come back through the
        reaper, which re-queues them.
        """
        if proxy.kind == AgentKind.GUEST.value:
            return "guest", {"vm_id": proxy.vm_id}
        if proxy.serves_all_hosts:
            return "all", {}
        return "hosts", {"proxy_id": proxy.id}

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

    async def claimable(self, proxy: Proxy, now: datetime, limit: int) -> list[ClaimCandidate]:
        """Jobs this proxy may take now, most urgent first, row-locked (skip locked).

        Plain rows of the few columns a claim decides on, not ORM objects: a claim looks at up to
        ``free * 4 + 16`` candidates and takes one or two (each object cost as much CPU as a
        statement)."""
        scope, params = self._claim_scope(proxy)
        rows = await self.session.execute(_claimable(scope, "claim"), {**params, "now": now, "limit": limit})
        return [ClaimCandidate(*row) for row in rows.tuples()]

    async def claimable_beyond(
        self, proxy: Proxy, now: datetime, limit: int, seen: list[uuid.UUID], full: Saturation
    ) -> list[ClaimCandidate]:
        """More of what :meth:`claimable` gives, past the ``seen`` candidates, without the backups
        ``full`` says the limits would refuse. Rare (a window the limits refused whole), so built
        per call."""
        scope, params = self._claim_scope(proxy)
        is_backup = Job.kind == JobKind.BACKUP.value
        where: list[ColumnElement[bool]] = [Job.id.not_in(seen)]
        if full.everything:
            where.append(~is_backup)
        if full.hosts:
            where.append(or_(~is_backup, Job.dispatch_host_id.not_in(full.hosts)))
        if full.datastores:
            on_full = (
                select(vm_datastores.c.vm_id)
                .where(vm_datastores.c.vm_id == Job.vm_id, vm_datastores.c.datastore_id.in_(full.datastores))
                .exists()
            )
            where.append(or_(~is_backup, ~on_full))
        stmt = _claimable(scope, "claim").where(*where)
        rows = await self.session.execute(stmt, {**params, "now": now, "limit": limit})
        return [ClaimCandidate(*row) for row in rows.tuples()]

    async def any_claimable(self, proxy: Proxy, now: datetime) -> bool:
        """A lock-free peek, so that an idle long-poll never queues for the claim lock."""
        scope, params = self._claim_scope(proxy)
        rows = await self.session.execute(_claimable(scope, "peek"), {**params, "now": now, "limit": 1})
        return rows.first() is not None

    async def start_claimed(
        self, job_ids: list[uuid.UUID], proxy_id: uuid.UUID, now: datetime, lease_expires_at: datetime
    ) -> list[uuid.UUID]:
        """Queued → running for ``job_ids`` in one compare-and-set; returns the ids that moved.

        One statement for the whole claim keeps the claim lock's critical section short.
        """
        if not job_ids:
            return []
        params = {"job_ids": job_ids, "to_proxy": proxy_id, "lease_until": lease_expires_at, "at": now}
        return list((await self.session.execute(_start_claimed(), params)).scalars())

    async def vm_host(self, vm_id: uuid.UUID) -> uuid.UUID | None:
        """The host a VM runs on now (a new proxy job's dispatch host)."""
        stmt = select(VirtualMachine.host_id).where(VirtualMachine.id == vm_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_many(self, job_ids: list[uuid.UUID]) -> list[Job]:
        if not job_ids:
            return []
        rows = await self.session.execute(_jobs_by_ids(), {"job_ids": job_ids})
        by_id = {job.id: job for job in rows.scalars()}
        return [by_id[i] for i in job_ids if i in by_id]

    async def placement(
        self, vm_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[uuid.UUID | None, set[uuid.UUID]]]:
        """Where VMs run now: their host and datastores (what concurrency limits count)."""
        if not vm_ids:
            return {}
        params = {"vm_ids": list(set(vm_ids))}
        hosts = await self.session.execute(_vm_hosts(), params)
        out: dict[uuid.UUID, tuple[uuid.UUID | None, set[uuid.UUID]]] = {
            vm_id: (host_id, set()) for vm_id, host_id in hosts.tuples()
        }
        stores = await self.session.execute(_vm_datastores(), params)
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
        lapsed_by: datetime | None = None,
        **values: Any,
    ) -> bool:
        """Compare-and-set ``job`` from the state it was read in to ``target``.

        Zero rows updated means someone else changed it first (another claimer, the reaper,
        a cancel): the caller lost and must not act as if it had won. ``lapsed_by``: only if the
        lease is still lapsed at that time (a report of its proxy that came in meanwhile wins).
        """
        current = JobState(job.state)
        if not can_transition(current, target):
            return False
        columns = tuple(sorted(values))
        stmt = _transition(
            current.value, target.value, expect_proxy is not None, lapsed_by is not None, columns
        )
        params = {
            "job_id": job.id,
            "from_attempt": job.attempt,
            "expect_proxy": expect_proxy,
            "lapsed_by": lapsed_by,
            **{f"set_{c}": values[c] for c in columns},
        }
        return (await self.session.execute(stmt, params)).scalar_one_or_none() is not None

    async def update_progress(
        self, job_id: uuid.UUID, proxy_id: uuid.UUID, attempt: int, **values: Any
    ) -> bool:
        """Compare-and-set on the proxy, the running state and the attempt the caller read."""
        columns = tuple(sorted(values))
        params = {
            "job_id": job_id,
            "on_proxy": proxy_id,
            "in_attempt": attempt,
            **{f"set_{c}": values[c] for c in columns},
        }
        result = await self.session.execute(_progress(columns), params)
        return bool(getattr(result, "rowcount", 0) == 1)
