"""What an agent needs to run a job it claimed: the assignment, built per job kind.

Built in the claim's second phase, outside the claim lock. Secrets (vCenter credentials, guest OS
credentials of a file restore) are decrypted here, sent once over the authenticated channel and
kept in memory only by the agent. Guest agents never receive vCenter credentials.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.contracts.agent import (
    SNAPSHOT_NAME_PREFIX,
    AppBackupParams,
    ApplicationItemSpec,
    AppRestoreParams,
    BackupParams,
    BackupParamsApp,
    CleanupParams,
    FileRestoreParams,
    FileSelection,
    GuestDelivery,
    GuestQuiesce,
    JobAssignment,
    OffsiteCopyParams,
    PreviousDisk,
    PreviousPoint,
    QuiesceParams,
    RepositoryAccess,
    RestoreParams,
    VCenterAccess,
    VmRef,
)
from app.crypto import SecretBox
from app.domain.jobs import GUEST_JOB_KINDS, JobKind
from app.guests.repository import GuestAgentRepository
from app.inventory.models import VirtualMachine
from app.inventory.repository import InventoryRepository
from app.jobs.models import Job
from app.policies.repository import PolicyRepository
from app.policies.service import application_protection
from app.proxies.models import Proxy
from app.restore_points.repository import RestorePointRepository
from app.restores.models import Restore
from app.restores.repository import RestoreRepository
from app.vcenters.models import VCenter
from app.vcenters.repository import VCenterRepository

#: How long a proxy waits for the guest agent to report its applications frozen before it takes a
#: crash-consistent snapshot instead (and says so on the restore point).
GUEST_FREEZE_TIMEOUT_S = 60.0
#: The longest a guest agent holds its applications frozen if the proxy never releases them.
QUIESCE_HOLD_MAX_S = 300.0


class JobNotRunnable(Exception):
    """The job cannot be carried out any more (its VM, vCenter, restore or policy is gone)."""


def snapshot_prefix(proxy_id: uuid.UUID) -> str:
    return f"{SNAPSHOT_NAME_PREFIX}{proxy_id}-"


def snapshot_name(proxy_id: uuid.UUID, job_id: uuid.UUID, attempt: int) -> str:
    """Snapshots are named after their owner so that a restarted proxy finds its own.

    The attempt is part of the name because a retry may run on the same proxy as the attempt it
    replaces: the clean-up queued for the lost attempt must remove that attempt's snapshot, never
    the one the retry is reading from at the same moment.
    """
    return f"{snapshot_prefix(proxy_id)}{job_id}-{attempt}"


#: Namespace of the restore point ids derived from (job, attempt).
POINT_ID_NAMESPACE = uuid.UUID("6f1c2b8e-3d47-5a90-9c1e-7b2d4f6a8e10")


def attempt_point_id(job: Job) -> uuid.UUID:
    """The restore point id of this attempt of a backup job: each attempt has its own.

    An earlier attempt's worker may still be alive (its proxy lost the service, not the
    repository) and commit its point after the job was claimed again: with one id for both,
    the new attempt would overwrite the committed point's indexes and then find its manifest
    taken. Apart, the earlier point is an orphan that the full retention pass judges.

    Derived from the job and the attempt, so a claim need not write it down: the assignment and
    the completion's check compute the same id. A job assigned by an earlier version recorded
    its id in ``params``; that one stands for its attempt.
    """
    if job.params.get("restore_point_attempt") == job.attempt and "restore_point_id" in job.params:
        return uuid.UUID(job.params["restore_point_id"])
    return uuid.uuid5(POINT_ID_NAMESPACE, f"{job.id}/{job.attempt}")


class AssignmentBuilder:
    def __init__(
        self,
        session: AsyncSession,
        box: SecretBox,
        lease_s: float,
        repository: RepositoryAccess,
        freeze_timeout_s: float = GUEST_FREEZE_TIMEOUT_S,
        offsite: RepositoryAccess | None = None,
    ) -> None:
        self.inventory = InventoryRepository(session)
        self.vcenters = VCenterRepository(session)
        self.points = RestorePointRepository(session)
        self.restores = RestoreRepository(session)
        self.policies = PolicyRepository(session)
        self.guests = GuestAgentRepository(session)
        self.box = box
        self.lease_s = lease_s
        self.repository = repository
        self.freeze_timeout_s = freeze_timeout_s
        self.offsite = offsite
        self._vcenter_cache: dict[uuid.UUID, VCenterAccess] = {}

    async def build(self, job: Job, agent: Proxy, now: datetime) -> JobAssignment:
        """The assignment of ``job`` to ``agent``; raises JobNotRunnable when it cannot run."""
        vm = await self.inventory.get_vm(job.vm_id, None)
        if vm is None:
            raise JobNotRunnable("the VM was removed from the catalog")
        kind = JobKind(job.kind)
        vcenter: VCenterAccess | None = None
        if kind not in GUEST_JOB_KINDS:
            vcenter = await self._vcenter_of(vm)
        assignment = JobAssignment(
            job_id=job.id,
            kind=job.kind,
            attempt=job.attempt,
            lease_expires_at=job.lease_expires_at or now,
            lease_s=self.lease_s,
            vm=VmRef(id=vm.id, instance_uuid=vm.instance_uuid, moid=vm.moid, name=vm.name),
            vcenter=vcenter,
            repository=self.repository,
        )
        if job.restore_id is not None and await self._from_offsite(job.restore_id):
            if self.offsite is None:
                raise JobNotRunnable(
                    "the restore reads the offsite copy, but no offsite repository is configured"
                )
            assignment.repository = self.offsite
        if kind is JobKind.BACKUP:
            assignment.backup = await self._backup(job, vm, agent)
        elif kind is JobKind.SNAPSHOT_CLEANUP:
            assignment.cleanup = CleanupParams(snapshot_name=str(job.params["snapshot_name"]))
        elif kind is JobKind.RESTORE:
            assignment.restore = _vm_restore(await self._restore_of(job))
        elif kind is JobKind.FILE_RESTORE:
            assignment.file_restore = self._file_restore(job, await self._restore_of(job))
        elif kind is JobKind.APP_BACKUP:
            assignment.app_backup = await self._app_backup(job, vm)
        elif kind is JobKind.APP_RESTORE:
            assignment.app_restore = _app_restore(await self._restore_of(job))
        elif kind is JobKind.OFFSITE_COPY:
            if self.offsite is None:
                raise JobNotRunnable("no offsite repository is configured any more")
            assignment.offsite_copy = OffsiteCopyParams(
                restore_point_id=uuid.UUID(job.params["restore_point_id"]), target=self.offsite
            )
        elif kind is JobKind.QUIESCE:
            assignment.quiesce = QuiesceParams(
                backup_job_id=uuid.UUID(job.params["backup_job_id"]), hold_max_s=QUIESCE_HOLD_MAX_S
            )
        return assignment

    async def _vcenter_of(self, vm: VirtualMachine) -> VCenterAccess:
        """The VM's vCenter access, read and decrypted once per builder (a claim's jobs are on
        the proxy's hosts, nearly always of one vCenter)."""
        access = self._vcenter_cache.get(vm.vcenter_id)
        if access is None:
            record = await self.vcenters.get(vm.vcenter_id, None)
            if record is None:
                raise JobNotRunnable("the VM's vCenter was removed")
            access = self._vcenter_cache[vm.vcenter_id] = self.vcenter_access(record)
        return access

    def vcenter_access(self, vcenter: VCenter) -> VCenterAccess:
        creds = json.loads(self.box.decrypt(vcenter.credentials_encrypted))
        return VCenterAccess(
            id=vcenter.id,
            url=vcenter.url,
            username=creds["username"],
            password=creds["password"],
            verify_tls=vcenter.verify_tls,
        )

    async def _backup(self, job: Job, vm: VirtualMachine, proxy: Proxy) -> BackupParams:
        previous = await self.points.latest_for_vm(vm.id)
        if previous is not None and await self.restores.disks_rewritten_since(vm.id, previous.created_at):
            # A restore over the VM rewrote its disks after that point, unseen by CBT: the changes
            # since it would miss the restored blocks, so this backup reads the disks whole.
            previous = None
        quiesce = bool(job.params.get("quiesce"))
        guest = None
        if quiesce and await self.guests.for_vm(vm.id) is not None:
            guest = BackupParamsApp(quiesce=GuestQuiesce(freeze_timeout_s=self.freeze_timeout_s))
        return BackupParams(
            restore_point_id=attempt_point_id(job),
            quiesce=quiesce,
            snapshot_name=snapshot_name(proxy.id, job.id, job.attempt),
            previous=PreviousPoint(
                id=previous.id,
                disks=[PreviousDisk(key=d["key"], change_id=d.get("change_id")) for d in previous.disks],
            )
            if previous
            else None,
            guest=guest,
        )

    async def _app_backup(self, job: Job, vm: VirtualMachine) -> AppBackupParams:
        policy = await self.policies.get(job.policy_id, None) if job.policy_id else None
        apps = application_protection(policy) if policy is not None else None
        items = job.params.get("items")
        if items is None:
            if apps is None:
                raise JobNotRunnable("the policy no longer protects applications")
            items = [item.model_dump(mode="json") for item in apps.items]
        if job.params.get("items") != items:
            job.params = {**job.params, "items": items}
        previous = await self.points.latest_for_vm(vm.id, kind="application")
        return AppBackupParams(
            restore_point_id=attempt_point_id(job),
            items=[ApplicationItemSpec.model_validate(i) for i in items],
            previous_restore_point_id=previous.id if previous else None,
        )

    async def _from_offsite(self, restore_id: uuid.UUID) -> bool:
        restore = await self.restores.get(restore_id)
        return restore is not None and restore.source_location == "offsite"

    async def _restore_of(self, job: Job) -> Restore:
        restore = await self.restores.get(job.restore_id) if job.restore_id else None
        if restore is None or restore.restore_point_id is None:
            raise JobNotRunnable("the restore request or its restore point is gone")
        return restore

    def _file_restore(self, job: Job, restore: Restore) -> FileRestoreParams:
        assert restore.restore_point_id is not None
        params = restore.target_params
        guest = None
        if params["delivery"] == "guest":
            if restore.secrets_encrypted is None:
                raise JobNotRunnable("the guest credentials of this restore were already erased")
            secrets = json.loads(self.box.decrypt(restore.secrets_encrypted))
            guest = GuestDelivery(
                username=secrets["username"],
                password=secrets["password"],
                target_directory=params.get("target_directory"),
                overwrite=bool(params.get("overwrite")),
            )
        return FileRestoreParams(
            restore_id=restore.id,
            restore_point_id=restore.restore_point_id,
            files=[FileSelection.model_validate(f) for f in params["files"]],
            delivery=params["delivery"],
            archive_format=params.get("archive_format", "tar"),
            export_id=export_id_for(restore.id, job.attempt),
            export_repository=self.repository,
            guest=guest,
        )


def export_id_for(restore_id: uuid.UUID, attempt: int) -> str:
    """The repository export that holds a file restore's archive, one per attempt: an earlier
    attempt's worker may still be writing (its proxy lost the service, not the repository), and
    with one id for both it would overwrite the segments of the archive the later one committed."""
    return f"restore-{restore_id}-{attempt}"


def attempt_export_ids(restore_id: uuid.UUID, attempts: int) -> list[str]:
    """Every export a file restore's attempts may have written (and the one id of earlier versions)."""
    return [f"restore-{restore_id}", *(export_id_for(restore_id, n) for n in range(1, attempts + 1))]


def _vm_restore(restore: Restore) -> RestoreParams:
    assert restore.restore_point_id is not None
    params = restore.target_params
    return RestoreParams(
        restore_id=restore.id,
        restore_point_id=restore.restore_point_id,
        target=restore.target,
        new_name=params.get("name"),
        host_moid=params.get("host_moid"),
        datastore_moid=params.get("datastore_moid"),
        datastore_name=params.get("datastore_name"),
        force=bool(params.get("force")),
        power_on=bool(params.get("power_on")),
    )


def _app_restore(restore: Restore) -> AppRestoreParams:
    assert restore.restore_point_id is not None
    p = restore.target_params
    return AppRestoreParams(
        restore_id=restore.id,
        restore_point_id=restore.restore_point_id,
        stream=p["stream"],
        engine=p["engine"],
        instance=p.get("instance") or "default",
        database=p.get("database"),
        target_database=p.get("target_database"),
        overwrite=bool(p.get("overwrite")),
        target_directory=p.get("target_directory"),
        paths=list(p.get("paths") or []),
    )
