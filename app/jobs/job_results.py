"""What a successful job leaves in the catalog, per kind, and the result kept on the job.

A result that does not match its job (a backup reporting another restore point, a restore
without its outcome) is refused with a 422 and the job stays running: the agent's report is
wrong, and recording it would put a false restore point or a false "succeeded" in the catalog.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.contracts.agent import CompleteRequest
from app.domain.jobs import JobKind
from app.errors import InvalidInput
from app.inventory.repository import InventoryRepository
from app.jobs.models import Job
from app.restore_points.service import RestorePointService

#: The part of a CompleteRequest each kind must report when it succeeds.
_REQUIRED = {
    JobKind.BACKUP: ("backup", "its restore point"),
    JobKind.RESTORE: ("restore", "the VM it produced"),
    JobKind.FILE_RESTORE: ("file_restore", "what it delivered"),
    JobKind.APP_BACKUP: ("app_backup", "its restore point"),
    JobKind.APP_RESTORE: ("app_restore", "what it restored"),
    JobKind.QUIESCE: ("quiesce", "when it froze and thawed"),
}


def result_of(request: CompleteRequest) -> dict[str, Any]:
    """The outcome kept on the job (and the restore): ids and figures, never secrets."""
    if request.backup is not None:
        return {"restore_point_id": str(request.backup.restore_point_id)}
    if request.app_backup is not None:
        return {"restore_point_id": str(request.app_backup.restore_point_id)}
    for part in (request.restore, request.file_restore, request.app_restore, request.quiesce):
        if part is not None:
            return part.model_dump(mode="json")
    return {}


class JobResults:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.inventory = InventoryRepository(session)
        self.points = RestorePointService(session)

    async def record_success(self, job: Job, request: CompleteRequest) -> None:
        kind = JobKind(job.kind)
        required = _REQUIRED.get(kind)
        if required is not None and getattr(request, required[0]) is None:
            raise InvalidInput(
                f"A successful {kind.value} job must report {required[1]}.", field=["body", required[0]]
            )
        if kind is JobKind.BACKUP:
            assert request.backup is not None
            self._check_point(job, str(request.backup.restore_point_id), "backup")
            await self.points.record_backup(job, await self._vm_name(job), request.backup, request.warnings)
        elif kind is JobKind.APP_BACKUP:
            assert request.app_backup is not None
            self._check_point(job, str(request.app_backup.restore_point_id), "app_backup")
            await self.points.record_app_backup(
                job, await self._vm_name(job), request.app_backup, request.warnings
            )

    @staticmethod
    def _check_point(job: Job, reported: str, part: str) -> None:
        if reported != job.params.get("restore_point_id"):
            raise InvalidInput(
                "The reported restore point is not the one assigned to this job.",
                field=["body", part, "restore_point_id"],
            )

    async def _vm_name(self, job: Job) -> str:
        vm = await self.inventory.get_vm(job.vm_id, None)
        return vm.name if vm else ""
