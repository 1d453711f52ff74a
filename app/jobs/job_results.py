"""What a successful job leaves in the catalog, per kind, and the result kept on the job.

A result that does not match its job (a backup reporting another restore point, a restore
without its outcome) is refused with a 422 and the job stays running: the agent's report is
wrong, and recording it would put a false restore point or a false "succeeded" in the catalog.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.contracts.agent import CompleteRequest
from app.domain.jobs import PRIORITY, JobKind, JobState, JobTrigger
from app.errors import InvalidInput
from app.inventory.repository import InventoryRepository
from app.jobs.job_params import attempt_point_id
from app.jobs.models import Job
from app.jobs.repository import JobRepository
from app.jobs.restore_sync import sync_restore
from app.policies.repository import PolicyRepository
from app.restore_points.models import RestorePoint
from app.restore_points.repository import RestorePointRepository
from app.restore_points.service import RestorePointService

#: The part of a CompleteRequest each kind must report when it succeeds.
_REQUIRED = {
    JobKind.BACKUP: ("backup", "its restore point"),
    JobKind.RESTORE: ("restore", "the VM it produced"),
    JobKind.FILE_RESTORE: ("file_restore", "what it delivered"),
    JobKind.APP_BACKUP: ("app_backup", "its restore point"),
    JobKind.APP_RESTORE: ("app_restore", "what it restored"),
    JobKind.QUIESCE: ("quiesce", "when it froze and thawed"),
    JobKind.OFFSITE_COPY: ("offsite_copy", "what it copied"),
}


def result_of(request: CompleteRequest) -> dict[str, Any]:
    """The outcome kept on the job (and the restore): ids and figures, never secrets."""
    if request.backup is not None:
        return {"restore_point_id": str(request.backup.restore_point_id)}
    if request.app_backup is not None:
        return {"restore_point_id": str(request.app_backup.restore_point_id)}
    for part in (
        request.restore,
        request.file_restore,
        request.app_restore,
        request.quiesce,
        request.offsite_copy,
    ):
        if part is not None:
            return part.model_dump(mode="json")
    return {}


#: Attempts of an offsite copy before it is reported failed (the copy loop queues it again later).
COPY_ATTEMPTS = 4


class JobResults:
    def __init__(self, session: AsyncSession, *, offsite: bool = False) -> None:
        self.session = session
        self.inventory = InventoryRepository(session)
        self.points = RestorePointService(session)
        self.repo = RestorePointRepository(session)
        self.policies = PolicyRepository(session)
        self.jobs = JobRepository(session)
        self.offsite = offsite  # an offsite repository is configured

    async def record_success(self, job: Job, request: CompleteRequest, now: datetime) -> None:
        """``now``: when the job ended (its ``finished_at`` is set only after this, by the
        transition), for the copy's ``copied_at`` and a queued copy's time."""
        kind = JobKind(job.kind)
        required = _REQUIRED.get(kind)
        if required is not None and getattr(request, required[0]) is None:
            raise InvalidInput(
                f"A successful {kind.value} job must report {required[1]}.", field=["body", required[0]]
            )
        if kind is JobKind.BACKUP:
            assert request.backup is not None
            self._check_point(job, str(request.backup.restore_point_id), "backup")
            point = await self.points.record_backup(
                job, await self._vm_name(job), request.backup, request.warnings
            )
            await self._queue_copy(job, point, now)
        elif kind is JobKind.APP_BACKUP:
            assert request.app_backup is not None
            self._check_point(job, str(request.app_backup.restore_point_id), "app_backup")
            point = await self.points.record_app_backup(
                job, await self._vm_name(job), request.app_backup, request.warnings
            )
            await self._queue_copy(job, point, now)
        elif kind is JobKind.OFFSITE_COPY:
            copied = await self.repo.get(uuid.UUID(job.params["restore_point_id"]))
            if copied is not None:
                copied.copy_status = "offsite"
                copied.copy_error = None
                copied.copied_at = now

    async def _queue_copy(self, job: Job, point: RestorePoint, now: datetime) -> None:
        """A new point of a policy with offsite copies gets its copy queued right away."""
        if not self.offsite or job.policy_id is None:
            return
        policy = await self.policies.get(job.policy_id, None)
        if policy is None or not policy.offsite_copy:
            return
        await queue_copy(self.jobs, point, now)

    async def copy_ended(self, job: Job) -> None:
        """Follow an offsite copy job that did not succeed: retrying, or failed for now."""
        if job.kind != JobKind.OFFSITE_COPY.value:
            return
        point = await self.repo.get(uuid.UUID(job.params["restore_point_id"]))
        if point is None:
            return
        point.copy_error = job.error
        if job.state in (JobState.FAILED.value, JobState.CANCELLED.value, JobState.SKIPPED.value):
            point.copy_status = "copy_failed"

    @staticmethod
    def _check_point(job: Job, reported: str, part: str) -> None:
        if reported != str(attempt_point_id(job)):
            raise InvalidInput(
                "The reported restore point is not the one assigned to this job.",
                field=["body", part, "restore_point_id"],
            )

    async def _vm_name(self, job: Job) -> str:
        return await self.inventory.vm_name(job.vm_id) or ""


async def queue_copy(jobs: JobRepository, point: RestorePoint, now: datetime) -> None:
    """Queue the offsite copy of ``point`` (one job; the point shows ``copying`` until it ends)."""
    point.copy_status = "copying"
    point.copy_error = None
    await jobs.add(
        Job(
            id=uuid.uuid4(),
            kind=JobKind.OFFSITE_COPY.value,
            state=JobState.QUEUED.value,
            trigger=JobTrigger.COPY.value,
            priority=PRIORITY[JobKind.OFFSITE_COPY],
            tenant_id=point.tenant_id,
            vm_id=point.vm_id,
            policy_id=point.policy_id,
            created_at=now,
            not_before=now,
            attempt=0,
            max_attempts=COPY_ATTEMPTS,
            params={"restore_point_id": str(point.id)},
            dispatch_host_id=await jobs.vm_host(point.vm_id),
        )
    )


async def follow_job(session: AsyncSession, job: Job, result: dict[str, Any] | None = None) -> None:
    """Bring what follows a job in step with its state, on every path that moves it (the agent's
    report, a job that cannot run, the reaper, a cancel): the restore it carries out, and the
    copy status of the point it copies when it did not succeed (success records the copy)."""
    await sync_restore(session, job, result)
    if job.state != JobState.SUCCEEDED.value:
        await JobResults(session).copy_ended(job)
