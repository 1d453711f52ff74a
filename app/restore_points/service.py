"""Reading restore points, and recording the one a successful backup produced."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.contracts.agent import AppBackupResult, BackupResult
from app.errors import NotFound
from app.jobs.models import Job
from app.pagination import PageRequest
from app.restore_points.models import RestorePoint
from app.restore_points.repository import RestorePointFilter, RestorePointRepository
from app.restore_points.schemas import RestorePointDisk, RestorePointRead, RestorePointStream


def restore_point_read(point: RestorePoint) -> RestorePointRead:
    return RestorePointRead(
        id=point.id,
        tenant_id=point.tenant_id,
        vm_id=point.vm_id,
        vm_name=point.vm_name,
        policy_id=point.policy_id,
        job_id=point.job_id,
        created_at=point.created_at,
        kind=point.kind,
        location=point.location,
        onsite=point.onsite_removed_at is None,
        copy_status=point.copy_status,
        copy_error=point.copy_error,
        copied_at=point.copied_at,
        consistency=point.consistency,
        size_bytes=point.size_bytes,
        bytes_read=point.bytes_read,
        bytes_new=point.bytes_new,
        bytes_stored=point.bytes_stored,
        dedup_ratio=round(point.size_bytes / point.bytes_stored, 2) if point.bytes_stored else None,
        used_cbt=point.used_cbt,
        disks=[RestorePointDisk.model_validate(d) for d in point.disks],
        streams=[RestorePointStream.model_validate(s) for s in point.streams or []],
        warnings=list(point.warnings or []),
    )


class RestorePointService:
    def __init__(self, session: AsyncSession) -> None:
        self.repo = RestorePointRepository(session)

    async def get(self, principal: Principal, point_id: uuid.UUID) -> RestorePoint:
        point = await self.repo.get(point_id, principal.tenant_scope)
        if point is None:
            raise NotFound(f"Restore point {point_id} does not exist.")
        return point

    async def list_page(
        self, principal: Principal, f: RestorePointFilter, page: PageRequest
    ) -> tuple[list[RestorePoint], int]:
        return await self.repo.list_page(principal.tenant_scope, f, page)

    async def record_backup(
        self, job: Job, vm_name: str, result: BackupResult, warnings: list[str]
    ) -> RestorePoint:
        disks = [d.model_dump() for d in result.disks]
        point = RestorePoint(
            id=result.restore_point_id,
            tenant_id=job.tenant_id,
            vm_id=job.vm_id,
            policy_id=job.policy_id,
            job_id=job.id,
            created_at=result.created_at,
            vm_name=vm_name,
            location="onsite",
            consistency=result.consistency,
            size_bytes=sum(d.size for d in result.disks),
            bytes_read=sum(d.bytes_read for d in result.disks),
            bytes_new=sum(d.bytes_new for d in result.disks),
            bytes_stored=sum(d.bytes_stored for d in result.disks),
            disks=disks,
            used_cbt=bool(result.disks) and all(d.used_cbt for d in result.disks),
            warnings=warnings,
        )
        await self.repo.add(point)
        return point

    async def record_app_backup(
        self, job: Job, vm_name: str, result: AppBackupResult, warnings: list[str]
    ) -> RestorePoint:
        """An application point: streams (dumps, file sets) written by the VM's guest agent.

        Application-consistent by construction: each dump is a consistent snapshot of its database.
        """
        streams = [s.model_dump(exclude={"metadata"}) for s in result.streams]
        point = RestorePoint(
            id=result.restore_point_id,
            tenant_id=job.tenant_id,
            vm_id=job.vm_id,
            policy_id=job.policy_id,
            job_id=job.id,
            created_at=result.created_at,
            vm_name=vm_name,
            location="onsite",
            kind="application",
            consistency="application",
            size_bytes=sum(s.size for s in result.streams),
            bytes_read=sum(s.size for s in result.streams),
            bytes_new=sum(s.bytes_new for s in result.streams),
            bytes_stored=sum(s.bytes_stored for s in result.streams),
            disks=[],
            streams=streams,
            used_cbt=False,
            warnings=warnings,
        )
        await self.repo.add(point)
        return point
