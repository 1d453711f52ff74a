"""Requesting full-VM restores; their state follows the job that carries them out."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.clock import Clock
from app.domain.jobs import PRIORITY, JobKind, JobState, JobTrigger, RestoreState
from app.errors import Conflict, InvalidInput, NotFound
from app.inventory.repository import InventoryRepository
from app.jobs.models import Job
from app.jobs.progress import job_progress
from app.jobs.repository import JobRepository
from app.pagination import PageRequest
from app.restore_points.repository import RestorePointRepository
from app.restores.models import Restore
from app.restores.repository import RestoreRepository
from app.restores.schemas import RestoreCreate, RestoreRead


class RestoreService:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.session = session
        self.repo = RestoreRepository(session)
        self.points = RestorePointRepository(session)
        self.inventory = InventoryRepository(session)
        self.jobs = JobRepository(session)
        self.clock = clock

    async def get(self, principal: Principal, restore_id: uuid.UUID) -> Restore:
        restore = await self.repo.get(restore_id, principal.tenant_scope)
        if restore is None:
            raise NotFound(f"Restore {restore_id} does not exist.")
        return restore

    async def list_page(
        self, principal: Principal, vm_id: uuid.UUID | None, state: str | None, page: PageRequest
    ) -> tuple[list[Restore], int]:
        return await self.repo.list_page(principal.tenant_scope, vm_id, state, page)

    async def request(self, principal: Principal, data: RestoreCreate) -> Restore:
        """Customers may restore their own VMs; operators any."""
        point = await self.points.get(data.restore_point_id, principal.tenant_scope)
        if point is None:
            raise NotFound(f"Restore point {data.restore_point_id} does not exist.")
        vm = await self.inventory.get_vm(point.vm_id, None)
        assert vm is not None
        target_params: dict[str, object] = {"power_on": data.power_on, "force": data.force}
        target_host_id: uuid.UUID | None = None
        if data.target == "original":
            if vm.gone_at is not None:
                raise Conflict(
                    f"VM '{vm.name}' no longer exists in vCenter; restore it as a new VM (target 'new')."
                )
            if vm.power_state == "poweredOn" and not data.force:
                raise Conflict(
                    f"VM '{vm.name}' is powered on; restoring over it would destroy its current state. "
                    "Power it off, restore as a new VM, or send force=true to power it off first."
                )
            if await self.repo.active_for_vm(vm.id) is not None:
                raise Conflict(f"A restore of VM '{vm.name}' is already in progress; wait for it to finish.")
        else:
            assert data.new_vm is not None
            host = await self.inventory.get_host(data.new_vm.host_id, point.tenant_id)
            if host is None or host.gone_at is not None:
                raise InvalidInput(
                    f"Host {data.new_vm.host_id} does not exist in this tenant.",
                    field=["body", "new_vm", "host_id"],
                )
            datastore = await self.inventory.get_datastore(data.new_vm.datastore_id, point.tenant_id)
            if datastore is None or datastore.gone_at is not None or datastore.vcenter_id != host.vcenter_id:
                raise InvalidInput(
                    f"Datastore {data.new_vm.datastore_id} does not exist in the host's vCenter.",
                    field=["body", "new_vm", "datastore_id"],
                )
            if host.vcenter_id != vm.vcenter_id:
                raise InvalidInput(
                    "Restores to another vCenter are not supported yet; pick a host of the VM's vCenter.",
                    field=["body", "new_vm", "host_id"],
                )
            target_host_id = host.id
            target_params.update(
                name=data.new_vm.name,
                host_id=str(host.id),
                host_moid=host.moid,
                datastore_id=str(datastore.id),
                datastore_moid=datastore.moid,
                datastore_name=datastore.name,
            )
        now = self.clock.now()
        restore = Restore(
            id=uuid.uuid4(),
            tenant_id=point.tenant_id,
            vm_id=vm.id,
            restore_point_id=point.id,
            restore_point_created_at=point.created_at,
            type=data.type,
            target=data.target,
            target_params=target_params,
            state=RestoreState.REQUESTED.value,
            source_location=point.location,
            requested_at=now,
            requested_by_key_id=principal.key_id,
        )
        await self.repo.add(restore)
        await self.jobs.add(
            Job(
                id=uuid.uuid4(),
                kind=JobKind.RESTORE.value,
                state=JobState.QUEUED.value,
                trigger=JobTrigger.RESTORE.value,
                priority=PRIORITY[JobKind.RESTORE],
                tenant_id=point.tenant_id,
                vm_id=vm.id,
                policy_id=point.policy_id,
                restore_id=restore.id,
                target_host_id=target_host_id,
                created_at=now,
                created_by_key_id=principal.key_id,
                not_before=now,
                attempt=0,
                max_attempts=2,
                params={},
            )
        )
        return restore

    async def to_read(self, restores: list[Restore]) -> list[RestoreRead]:
        jobs = await self.repo.jobs_for([r.id for r in restores])
        now = self.clock.now()
        reads = []
        for restore in restores:
            job = jobs.get(restore.id)
            reads.append(
                RestoreRead(
                    id=restore.id,
                    tenant_id=restore.tenant_id,
                    vm_id=restore.vm_id,
                    restore_point_id=restore.restore_point_id,
                    restore_point_created_at=restore.restore_point_created_at,
                    type=restore.type,
                    target=restore.target,
                    target_params=restore.target_params,
                    state=restore.state,
                    source_location=restore.source_location,
                    requested_at=restore.requested_at,
                    initiated_at=restore.initiated_at,
                    completed_at=restore.completed_at,
                    job_id=job.id if job else None,
                    progress=job_progress(job, now) if job else None,
                    error=restore.error,
                    result=restore.result,
                )
            )
        return reads
