"""Says why queued jobs wait. Agents pull work, so a job nobody can take just sits there;
this loop names the reason on the job (and so on the VM): no online proxy serves its host, or
(for application jobs) the VM has no guest agent, or its agent is offline."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.domain.jobs import GUEST_JOB_KINDS, AgentKind, JobState
from app.inventory.models import Host, VirtualMachine
from app.jobs.models import Job
from app.jobs.repository import JobRepository
from app.proxies.models import Proxy, proxy_hosts
from app.scheduler.loop import LoopService

log = logging.getLogger(__name__)


class DispatchWatchLoop(LoopService):
    name = "dispatch-watch"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        stale_after_s: float,
        interval_s: float = 10,
    ) -> None:
        super().__init__(interval_s)
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.stale_after = timedelta(seconds=stale_after_s)

    async def run_once(self) -> None:
        online_since = self.clock.now() - self.stale_after
        async with self.sessionmaker.begin() as session:
            # Safety net: syncs move queued jobs with their VMs; anything missed is caught here.
            moved = await JobRepository(session).refresh_dispatch_hosts()
            if moved:
                log.info("dispatch watch: %d queued job(s) now follow their VM to another host", moved)
            everywhere = (
                await session.execute(
                    select(func.count()).where(
                        Proxy.serves_all_hosts.is_(True), Proxy.last_heartbeat_at >= online_since
                    )
                )
            ).scalar_one()
            served = set(
                (
                    await session.execute(
                        select(proxy_hosts.c.host_id)
                        .join(Proxy, Proxy.id == proxy_hosts.c.proxy_id)
                        .where(Proxy.last_heartbeat_at >= online_since)
                    )
                ).scalars()
            )
            guests = {
                vm_id: heartbeat is not None and heartbeat >= online_since
                for vm_id, heartbeat in (
                    await session.execute(
                        select(Proxy.vm_id, Proxy.last_heartbeat_at).where(
                            Proxy.kind == AgentKind.GUEST.value
                        )
                    )
                ).tuples()
            }
            target = func.coalesce(Job.target_host_id, VirtualMachine.host_id)
            rows = (
                await session.execute(
                    select(
                        Job.id,
                        Job.waiting_reason,
                        target,
                        Host.name,
                        Job.kind,
                        Job.vm_id,
                        VirtualMachine.name,
                    )
                    .join(VirtualMachine, VirtualMachine.id == Job.vm_id)
                    .outerjoin(Host, Host.id == target)
                    .where(Job.state == JobState.QUEUED.value)
                    .limit(20000)
                )
            ).tuples()
            changes: dict[str | None, list[uuid.UUID]] = defaultdict(list)
            guest_kinds = {k.value for k in GUEST_JOB_KINDS}
            for job_id, current, host_id, host_name, kind, vm_id, vm_name in rows:
                reason: str | None
                if kind in guest_kinds:
                    online = guests.get(vm_id)
                    if online is None:
                        reason = f"no guest agent in VM {vm_name}; register one (POST /guest-agents)"
                    else:
                        reason = None if online else f"the guest agent of VM {vm_name} is offline"
                elif host_id is None:
                    reason = "the VM's host is unknown; sync the vCenter"
                elif everywhere or host_id in served:
                    reason = None
                else:
                    reason = f"no proxy for host {host_name}"
                if reason != current:
                    changes[reason].append(job_id)
            for reason, job_ids in changes.items():
                await session.execute(
                    update(Job)
                    .where(Job.id.in_(job_ids), Job.state == JobState.QUEUED.value)
                    .values(waiting_reason=reason)
                    .execution_options(synchronize_session=False)
                )
