"""Freezing a VM's applications for the instant of its snapshot, through its guest agent.

The proxy that runs an application-aware backup asks for a quiesce job (``request``), which the
VM's guest agent claims like any job: it flushes and locks its databases, runs the pre-freeze
scripts and reports the phase ``frozen``. The proxy polls (``status``), takes the snapshot, and
releases the freeze (``release``); the agent thaws and completes the job with the times it froze
and thawed. The restore point is application-consistent only if the freeze held until the
release; a guest that does not freeze in time costs a crash-consistent snapshot, never a missed
backup. Everything is state on one job, so a restart of any party loses nothing.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import Clock
from app.contracts.agent import QuiesceResult, QuiesceStatus
from app.domain.jobs import PRIORITY, JobKind, JobState, JobTrigger
from app.errors import Conflict, NotFound
from app.jobs.agent_scope import agent_may_know
from app.jobs.models import Job
from app.jobs.repository import JobRepository
from app.proxies.models import Proxy

#: An unclaimed quiesce job ends as missed after this: the proxy has long gone on without it.
QUIESCE_CLAIM_WINDOW = timedelta(minutes=5)


class QuiesceCoordinator:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.jobs = JobRepository(session)
        self.clock = clock

    async def _backup(self, proxy: Proxy, backup_job_id: uuid.UUID, attempt: int | None) -> Job:
        job = await self.jobs.get(backup_job_id)
        if job is None or job.kind != JobKind.BACKUP.value or not agent_may_know(proxy, job):
            raise NotFound(f"Backup job {backup_job_id} does not exist.")
        if job.proxy_id != proxy.id or job.state != JobState.RUNNING.value:
            raise Conflict(f"Job {backup_job_id} is not running on this proxy any more; stop it.")
        if attempt is not None and attempt != job.attempt:
            # An earlier attempt's worker, still alive on the same proxy, must not thaw the
            # guest under the snapshot of the attempt that superseded it.
            raise Conflict(
                f"Attempt {attempt} of job {backup_job_id} was superseded by attempt {job.attempt}; stop it."
            )
        return job

    async def _quiesce_of(self, backup: Job) -> Job | None:
        quiesce_id = backup.params.get("quiesce_job_id")
        return await self.jobs.get(uuid.UUID(quiesce_id)) if quiesce_id else None

    async def request(
        self, proxy: Proxy, backup_job_id: uuid.UUID, attempt: int | None = None
    ) -> QuiesceStatus:
        """Queue the quiesce job for this backup attempt (idempotent within an attempt)."""
        backup = await self._backup(proxy, backup_job_id, attempt)
        current = await self._quiesce_of(backup)
        if current is not None and current.params.get("backup_attempt") == backup.attempt:
            return self._status(current)
        now = self.clock.now()
        job = Job(
            id=uuid.uuid4(),
            kind=JobKind.QUIESCE.value,
            state=JobState.QUEUED.value,
            trigger=JobTrigger.QUIESCE.value,
            priority=PRIORITY[JobKind.QUIESCE],
            tenant_id=backup.tenant_id,
            vm_id=backup.vm_id,
            policy_id=backup.policy_id,
            created_at=now,
            not_before=now,
            window_end=now + QUIESCE_CLAIM_WINDOW,
            attempt=0,
            max_attempts=1,  # a retry later would freeze the VM for a snapshot long taken
            params={"backup_job_id": str(backup.id), "backup_attempt": backup.attempt},
        )
        await self.jobs.add(job)
        backup.params = {**backup.params, "quiesce_job_id": str(job.id)}
        return self._status(job)

    async def status(
        self, proxy: Proxy, backup_job_id: uuid.UUID, attempt: int | None = None
    ) -> QuiesceStatus:
        backup = await self._backup(proxy, backup_job_id, attempt)
        job = await self._quiesce_of(backup)
        if job is None:
            raise NotFound(f"No quiesce was requested for job {backup_job_id}.")
        return self._status(job)

    async def release(
        self, proxy: Proxy, backup_job_id: uuid.UUID, attempt: int | None = None
    ) -> QuiesceStatus:
        """The snapshot is taken (or abandoned): thaw now. A quiesce not yet claimed is cancelled."""
        backup = await self._backup(proxy, backup_job_id, attempt)
        job = await self._quiesce_of(backup)
        if job is None:
            raise NotFound(f"No quiesce was requested for job {backup_job_id}.")
        if job.state == JobState.QUEUED.value:
            await self.jobs.transition(
                job,
                JobState.CANCELLED,
                finished_at=self.clock.now(),
                error="the snapshot was taken without waiting for the guest agent",
            )
        elif job.state == JobState.RUNNING.value:
            job.params = {**job.params, "release": True}
        return self._status(job)

    @staticmethod
    def _status(job: Job) -> QuiesceStatus:
        result = QuiesceResult.model_validate(job.result) if job.state == JobState.SUCCEEDED.value else None
        return QuiesceStatus(
            job_id=job.id,
            state=job.state,
            frozen=job.state == JobState.RUNNING.value and job.phase == "frozen",
            result=result,
            error=job.error,
        )
