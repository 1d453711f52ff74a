"""Queueing backups, reading and cancelling jobs (the user side of jobs)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.clock import Clock
from app.domain.jobs import PRIORITY, JobKind, JobState, JobTrigger
from app.errors import Conflict, InvalidInput, NotFound
from app.inventory.repository import InventoryRepository
from app.jobs.job_results import follow_job
from app.jobs.models import Job
from app.jobs.repository import JobFilter, JobRepository
from app.pagination import PageRequest
from app.policies.repository import PolicyRepository

#: Retries of a backup of a VM that no policy protects (a policy sets its own).
DEFAULT_RETRIES = 3


class JobService:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.session = session
        self.repo = JobRepository(session)
        self.inventory = InventoryRepository(session)
        self.policies = PolicyRepository(session)
        self.clock = clock

    async def get(self, principal: Principal, job_id: uuid.UUID) -> Job:
        job = await self.repo.get(job_id, principal.tenant_scope)
        if job is None:
            raise NotFound(f"Job {job_id} does not exist.")
        return job

    async def list_page(self, principal: Principal, f: JobFilter, page: PageRequest) -> tuple[list[Job], int]:
        return await self.repo.list_page(principal.tenant_scope, f, page)

    async def enqueue_backups(
        self,
        principal: Principal,
        vm_ids: list[uuid.UUID],
        trigger: JobTrigger = JobTrigger.MANUAL,
        kind: JobKind = JobKind.BACKUP,
    ) -> list[Job]:
        """One backup job per VM; a VM that already has one queued or running gets that one.

        Application backups need the VM's policy to protect applications (it says what to dump).
        """
        principal.require_operator("start backups")
        jobs: list[Job] = []
        for index, vm_id in enumerate(dict.fromkeys(vm_ids)):
            vm = await self.inventory.get_vm(vm_id, principal.tenant_scope)
            if vm is None:
                raise InvalidInput(f"VM {vm_id} does not exist.", field=["body", "vm_ids", index])
            if vm.gone_at is not None:
                raise InvalidInput(
                    f"VM '{vm.name}' no longer exists in vCenter; it cannot be backed up.",
                    field=["body", "vm_ids", index],
                )
            existing = await self.repo.active_backup(vm.id, kind)
            if existing is not None:
                jobs.append(existing)
                continue
            policy = (
                await self.policies.get(vm.protection_policy_id, None) if vm.protection_policy_id else None
            )
            if kind is JobKind.APP_BACKUP and (policy is None or policy.applications is None):
                raise InvalidInput(
                    f"VM '{vm.name}' is not protected by a policy with applications; an application "
                    "backup needs one to say which databases and files to back up.",
                    field=["body", "vm_ids", index],
                )
            now = self.clock.now()
            job = Job(
                id=uuid.uuid4(),
                kind=kind.value,
                dispatch_host_id=vm.host_id if kind is JobKind.BACKUP else None,
                state=JobState.QUEUED.value,
                trigger=trigger.value,
                priority=PRIORITY[kind],
                tenant_id=vm.tenant_id,
                vm_id=vm.id,
                policy_id=policy.id if policy else None,
                created_at=now,
                created_by_key_id=principal.key_id,
                not_before=now,
                attempt=0,
                max_attempts=(policy.retry_count if policy else DEFAULT_RETRIES) + 1,
                params={"quiesce": bool(policy and policy.application_aware)}
                if kind is JobKind.BACKUP
                else {},
            )
            await self.repo.add(job)
            jobs.append(job)
        return jobs

    async def cancel(self, principal: Principal, job_id: uuid.UUID) -> Job:
        principal.require_operator("cancel jobs")
        job = await self.get(principal, job_id)
        for _ in range(3):
            state = JobState(job.state)
            if state is JobState.QUEUED:
                if await self.repo.transition(
                    job, JobState.CANCELLED, finished_at=self.clock.now(), error="cancelled before it started"
                ):
                    await follow_job(self.session, job)
                    return job
            elif state is JobState.RUNNING:
                # The proxy sees the request on its next progress report, stops, removes its
                # snapshot and reports the job cancelled. Set on the attempt read, in the row: a
                # job the reaper re-queued meanwhile is cancelled as queued on the next turn.
                if await self.repo.transition(job, JobState.RUNNING, cancel_requested=True):
                    return job
            else:
                raise Conflict(f"Job {job_id} already ended ({job.state}); there is nothing to cancel.")
            # A claim or the reaper moved it between the read and the write: read it again
            # from the catalog (the session's copy is the one read before).
            await self.session.refresh(job)
        raise Conflict(f"Job {job_id} changed state while it was being cancelled; send the cancel again.")
