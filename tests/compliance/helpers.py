"""Catalog facts for compliance tests: protected VMs, restore points, jobs, proxies, restores.

Jobs and restore points are written straight to the catalog (the compliance rules read the
catalog; how a backup gets there is tested elsewhere), at the ManualClock's times.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from app.compliance.models import ProtectionSpan, RestoreSla, RpoBreach
from app.compliance.recorder import RestoreSlaRecorder, RpoRecorder
from app.context import AppContext
from app.contracts.agent import BackupResult, DiskResult
from app.domain.jobs import PRIORITY, JobKind
from app.inventory.models import Datastore, VirtualMachine, vm_datastores
from app.jobs.models import Job
from app.proxies.models import Proxy
from app.restore_points.service import RestorePointService
from tests.api.test_policies import create_policy, synced_tenant
from tests.api.test_proxies import register_proxy
from tests.support.app import CustomerFactory
from tests.support.vcsim import VcsimServer


async def protected_vm(
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    tenant: str = "Acme",
    **policy: Any,
) -> tuple[httpx.AsyncClient, uuid.UUID, dict[str, Any], dict[str, Any]]:
    """A tenant whose first VM is protected by policy 'gold' (created now)."""
    customer, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim, tenant)
    created = await create_policy(
        operator, tenant_id, name="gold", selection={"vm_ids": [vms[0]["id"]]}, **policy
    )
    return customer, tenant_id, vms[0], created


async def add_job(
    ctx: AppContext,
    vm_id: str | uuid.UUID,
    state: str,
    *,
    error: str | None = None,
    waiting_reason: str | None = None,
    started: datetime | None = None,
    finished: datetime | None = None,
    bytes_read: int = 0,
    bytes_stored: int = 0,
) -> Job:
    now = ctx.clock.now()
    async with ctx.sessionmaker.begin() as session:
        vm_uuid = uuid.UUID(str(vm_id))
        vm = (await session.execute(select(VirtualMachine).where(VirtualMachine.id == vm_uuid))).scalar_one()
        job = Job(
            id=uuid.uuid4(),
            kind=JobKind.BACKUP.value,
            state=state,
            trigger="scheduled",
            priority=PRIORITY[JobKind.BACKUP],
            tenant_id=vm.tenant_id,
            vm_id=vm.id,
            policy_id=vm.protection_policy_id,
            created_at=now,
            not_before=now,
            attempt=1,
            max_attempts=1,
            params={},
            error=error,
            waiting_reason=waiting_reason,
            started_at=started,
            finished_at=finished if finished else (None if state in ("queued", "running") else now),
            bytes_read=bytes_read,
            bytes_stored=bytes_stored,
        )
        session.add(job)
    return job


async def add_point(ctx: AppContext, vm_id: str | uuid.UUID, at: datetime | None = None) -> uuid.UUID:
    """A successful backup job and its restore point, taken at ``at`` (default now)."""
    job = await add_job(ctx, vm_id, "succeeded")
    point_id = uuid.uuid4()
    async with ctx.sessionmaker.begin() as session:
        result = BackupResult(
            restore_point_id=point_id,
            created_at=at or ctx.clock.now(),
            consistency="crash",
            disks=[DiskResult(key=2000, label="Hard disk 1", size=1 << 20)],
        )
        await RestorePointService(session).record_backup(job, "vm", result, [])
    return point_id


async def online_proxy(operator: httpx.AsyncClient, ctx: AppContext, host_id: str) -> str:
    proxy = await register_proxy(operator, f"proxy-{uuid.uuid4().hex[:6]}", [host_id])
    await heartbeat(ctx, proxy["id"])
    return str(proxy["id"])


async def heartbeat(ctx: AppContext, proxy_id: str) -> None:
    async with ctx.sessionmaker.begin() as session:
        await session.execute(
            update(Proxy).where(Proxy.id == uuid.UUID(proxy_id)).values(last_heartbeat_at=ctx.clock.now())
        )


async def set_datastore_free(ctx: AppContext, vm_id: str, percent: float, status: str) -> str:
    """Marks the VM's datastores as this full; returns the first one's name."""
    async with ctx.sessionmaker.begin() as session:
        ids = list(
            (
                await session.execute(
                    select(vm_datastores.c.datastore_id).where(vm_datastores.c.vm_id == uuid.UUID(vm_id))
                )
            ).scalars()
        )
        await session.execute(
            update(Datastore).where(Datastore.id.in_(ids)).values(free_percent=percent, space_status=status)
        )
        names = (await session.execute(select(Datastore.name).where(Datastore.id.in_(ids)))).scalars()
        return sorted(names)[0]


async def breaches(ctx: AppContext) -> list[RpoBreach]:
    async with ctx.sessionmaker() as session:
        rows = await session.execute(select(RpoBreach).order_by(RpoBreach.started_at))
        return list(rows.scalars())


async def table_rows(ctx: AppContext) -> dict[str, list[tuple[Any, ...]]]:
    """Every compliance row, comparable across runs."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with ctx.sessionmaker() as session:
        for model in (ProtectionSpan, RpoBreach, RestoreSla):
            table = model.__table__  # type: ignore[attr-defined]
            rows = (await session.execute(select(table))).tuples()
            out[table.name] = sorted((tuple(str(v) for v in row) for row in rows), key=str)
    return out


def rpo_recorder(ctx: AppContext) -> RpoRecorder:
    return RpoRecorder(ctx.sessionmaker, ctx.clock, proxy_stale_after_s=ctx.settings.proxy_stale_after_s)


def sla_recorder(ctx: AppContext) -> RestoreSlaRecorder:
    return RestoreSlaRecorder(ctx.sessionmaker, ctx.clock)


def hours(h: float) -> timedelta:
    return timedelta(hours=h)
