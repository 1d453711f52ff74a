"""Requesting full-VM restores; their state follows the job that carries them out."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.clock import Clock
from app.crypto import SecretBox
from app.domain.jobs import GUEST_JOB_KINDS, PRIORITY, JobKind, JobState, JobTrigger, RestoreState
from app.errors import Conflict, InvalidInput, NotFound, Unavailable
from app.guests.repository import GuestAgentRepository
from app.inventory.models import VirtualMachine
from app.inventory.repository import InventoryRepository
from app.jobs.models import Job
from app.jobs.progress import job_progress
from app.jobs.repository import JobRepository
from app.pagination import PageRequest
from app.restore_points.models import RestorePoint
from app.restore_points.repository import RestorePointRepository
from app.restores.models import Restore
from app.restores.repository import RestoreRepository
from app.restores.schemas import (
    ApplicationRestoreCreate,
    FileRef,
    FileRestoreCreate,
    RestoreCreate,
    RestoreRead,
    VmRestoreCreate,
)
from app.tenants.repository import TenantRepository


class FileChecker(Protocol):
    """The server's view of the repositories (app.browse): paths in points, where points are."""

    async def check(self, point: RestorePoint, files: list[FileRef]) -> list[str]:
        """The normalised path of each file; raises NotFound/InvalidInput naming the bad one."""
        ...

    async def where(self, point: RestorePoint) -> str:
        """``onsite``, ``offsite`` or ``missing``: where a restore of the point reads from."""
        ...


def _require_kind(point: RestorePoint, kind: str, what: str) -> None:
    if point.kind != kind:
        raise InvalidInput(
            f"Restore point {point.id} is an {point.kind} restore point; {what} needs an {kind} one.",
            field=["body", "restore_point_id"],
        )


def _same_app_target(a: dict[str, Any], b: dict[str, object]) -> bool:
    """Whether two application restores write to the same place: one database of one instance,
    or directories of which one contains the other."""
    if (a.get("engine") == "files") != (b.get("engine") == "files"):
        return False
    if b.get("engine") == "files":
        first = PurePosixPath(str(a.get("target_directory")))
        second = PurePosixPath(str(b.get("target_directory")))
        return first == second or first in second.parents or second in first.parents
    return (a.get("engine"), a.get("instance"), a.get("target_database")) == (
        b.get("engine"),
        b.get("instance"),
        b.get("target_database"),
    )


@dataclass(frozen=True)
class TicketOrigin:
    """A request from a ticketing integration: its SLA clocks start when the ticket was opened,
    and it is one restore per (integration, ticket) (a unique constraint)."""

    requested_at: datetime
    integration_id: uuid.UUID
    ticket_id: str


class RestoreService:
    def __init__(
        self,
        session: AsyncSession,
        clock: Clock,
        box: SecretBox | None = None,
        files: FileChecker | None = None,
    ) -> None:
        self.session = session
        self.guests = GuestAgentRepository(session)
        self.tenants = TenantRepository(session)
        self.box = box
        self.files = files
        self.repo = RestoreRepository(session)
        self.points = RestorePointRepository(session)
        self.inventory = InventoryRepository(session)
        self.jobs = JobRepository(session)
        self.clock = clock
        #: Restores this service recorded, with the job it queued (None: awaiting approval), so
        #: that answering the request does not read back what it just wrote.
        self._job_of: dict[uuid.UUID, Job | None] = {}

    async def get(self, principal: Principal, restore_id: uuid.UUID) -> Restore:
        restore = await self.repo.get(restore_id, principal.tenant_scope)
        if restore is None:
            raise NotFound(f"Restore {restore_id} does not exist.")
        return restore

    async def list_page(
        self, principal: Principal, vm_id: uuid.UUID | None, state: str | None, page: PageRequest
    ) -> tuple[list[Restore], int]:
        return await self.repo.list_page(principal.tenant_scope, vm_id, state, page)

    async def request(
        self,
        principal: Principal,
        data: RestoreCreate,
        *,
        ticket: TicketOrigin | None = None,
        found: tuple[RestorePoint, VirtualMachine] | None = None,
        flush: bool = True,
    ) -> Restore:
        """Customers may restore their own VMs; operators any. Nothing is recorded unless the whole
        request is valid. ``ticket``: asked for by a ticketing integration (see TicketOrigin).
        ``found``: the point and its VM when the caller has already read them in the caller's
        scope (the ticket webhook finds the point by time). ``flush=False``: the restore's job
        is flushed by the caller with what it adds next (each flush costs as much CPU as a
        statement or more: docs/benchmarks.md, webhooks)."""
        if found is None or found[0].id != data.restore_point_id:
            found = await self.points.get_with_vm(data.restore_point_id, principal.tenant_scope)
        if found is None:
            raise NotFound(f"Restore point {data.restore_point_id} does not exist.")
        point, vm = found
        if isinstance(data, VmRestoreCreate):
            restore = await self._vm_restore(principal, data, point, vm, ticket)
        elif isinstance(data, FileRestoreCreate):
            restore = await self._file_restore(principal, data, point, vm, ticket)
        else:
            restore = await self._app_restore(principal, data, point, vm, ticket)
        if flush:
            await self.session.flush()
        return restore

    async def _vm_restore(
        self,
        principal: Principal,
        data: VmRestoreCreate,
        point: RestorePoint,
        vm: VirtualMachine,
        ticket: TicketOrigin | None = None,
    ) -> Restore:
        _require_kind(point, "image", "a whole-VM restore")
        target_params: dict[str, object] = {"power_on": data.power_on, "force": data.force}
        target_host_id: uuid.UUID | None = None
        needs_approval = False  # only restores over the original VM wait for an operator
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
            tenant = await self.tenants.get(vm.tenant_id, None)
            needs_approval = tenant is not None and tenant.restore_approval_required
        else:
            assert data.new_vm is not None
            host, datastore = await self.inventory.host_and_datastore(
                data.new_vm.host_id, data.new_vm.datastore_id, point.tenant_id
            )
            if host is None or host.gone_at is not None:
                raise InvalidInput(
                    f"Host {data.new_vm.host_id} does not exist in this tenant.",
                    field=["body", "new_vm", "host_id"],
                )
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
        return await self._record(
            principal,
            point,
            vm,
            JobKind.RESTORE,
            "vm",
            data.target,
            target_params,
            target_host_id=target_host_id,
            needs_approval=needs_approval,
            ticket=ticket,
        )

    async def _file_restore(
        self,
        principal: Principal,
        data: FileRestoreCreate,
        point: RestorePoint,
        vm: VirtualMachine,
        ticket: TicketOrigin | None = None,
    ) -> Restore:
        _require_kind(point, "image", "a file restore")
        disk_keys = {int(d["key"]) for d in point.disks}
        for index, ref in enumerate(data.files):
            if ref.disk not in disk_keys:
                raise InvalidInput(
                    f"The restore point has no disk {ref.disk}; its disks are {sorted(disk_keys)}.",
                    field=["body", "files", index, "disk"],
                )
        if self.files is None:
            raise Unavailable("File-level restore is not available on this server (no repository access).")
        normalized = await self.files.check(point, data.files)
        files = [
            {"disk": ref.disk, "volume": ref.volume, "path": path}
            for ref, path in zip(data.files, normalized, strict=True)
        ]
        secrets: bytes | None = None
        if data.guest is not None:
            if vm.gone_at is not None:
                raise Conflict(
                    f"VM '{vm.name}' no longer exists in vCenter; download the files as an archive."
                )
            target = "guest"
            params: dict[str, object] = {
                "delivery": "guest",
                "files": files,
                "target_directory": data.guest.target_directory,
                "overwrite": data.guest.overwrite,
            }
            if self.box is None:
                raise Unavailable("This server cannot keep guest credentials (no secret key).")
            secrets = self.box.encrypt(
                json.dumps({"username": data.guest.username, "password": data.guest.password}).encode()
            )
        else:
            target = "archive"
            params = {"delivery": "archive", "files": files, "archive_format": data.format}
        return await self._record(
            principal, point, vm, JobKind.FILE_RESTORE, "files", target, params, secrets, ticket=ticket
        )

    async def _app_restore(
        self,
        principal: Principal,
        data: ApplicationRestoreCreate,
        point: RestorePoint,
        vm: VirtualMachine,
        ticket: TicketOrigin | None = None,
    ) -> Restore:
        _require_kind(point, "application", "an application restore")
        stream = next((s for s in point.streams or [] if s.get("name") == data.stream), None)
        if stream is None:
            names = ", ".join(sorted(s.get("name", "") for s in point.streams or [])) or "none"
            raise InvalidInput(
                f"The restore point has no stream '{data.stream}'; it has: {names}.", field=["body", "stream"]
            )
        engine = str(stream.get("engine"))
        params: dict[str, object] = {
            "stream": data.stream,
            "engine": engine,
            "instance": stream.get("instance"),
            "database": stream.get("database"),
        }
        if engine == "files":
            if data.target_directory is None:
                raise InvalidInput(
                    "A file set is restored into a directory of the VM: send target_directory.",
                    field=["body", "target_directory"],
                )
            if data.target_database is not None or data.overwrite:
                raise InvalidInput(
                    "target_database and overwrite are for databases; this stream is a file set.",
                    field=["body", "target_database"],
                )
            params.update(target_directory=data.target_directory, paths=data.paths)
        else:
            if data.target_directory is not None or data.paths:
                raise InvalidInput(
                    "target_directory and paths are for file sets; this stream is a database.",
                    field=["body", "target_directory"],
                )
            params.update(
                target_database=data.target_database or stream.get("database"), overwrite=data.overwrite
            )
        if vm.gone_at is not None:
            raise Conflict(f"VM '{vm.name}' no longer exists; its guest agent cannot restore into it.")
        await self._ensure_target_free(vm, params)
        if await self.guests.for_vm(vm.id) is None:
            raise Conflict(
                f"VM '{vm.name}' has no guest agent; install and register one (POST /guest-agents) first."
            )
        return await self._record(
            principal, point, vm, JobKind.APP_RESTORE, "application", "original", params, ticket=ticket
        )

    async def _ensure_target_free(self, vm: VirtualMachine, params: dict[str, object]) -> None:
        """An application restore must not write where another active restore of the VM writes:
        two loads of one database (each may drop what the other created), two file sets into
        one directory or one inside the other, or anything while the whole VM is overwritten."""
        for other in await self.repo.active_list_for_vm(vm.id):
            if other.type == "vm" and other.target == "original":
                raise Conflict(
                    f"VM '{vm.name}' is being restored over (restore {other.id}); wait for it to finish."
                )
            if other.type == "application" and _same_app_target(other.target_params or {}, params):
                raise Conflict(
                    f"Restore {other.id} is already restoring into the same "
                    f"{'directory' if params.get('engine') == 'files' else 'database'} of VM "
                    f"'{vm.name}'; wait for it to finish or choose another target."
                )

    async def _record(
        self,
        principal: Principal,
        point: RestorePoint,
        vm: VirtualMachine,
        kind: JobKind,
        restore_type: str,
        target: str,
        target_params: dict[str, object],
        secrets: bytes | None = None,
        *,
        target_host_id: uuid.UUID | None = None,
        needs_approval: bool = False,
        requested_at: datetime | None = None,
        ticket: TicketOrigin | None = None,
    ) -> Restore:
        """Record the request; queue its job now, or when an operator approves it."""
        now = self.clock.now()
        source = point.location
        if self.files is not None and point.copy_status == "offsite":
            # Onsite while it is there (faster); the offsite copy when onsite lost or pruned it.
            source = await self.files.where(point)
            if source == "missing":
                raise Conflict(
                    f"Restore point {point.id} is no longer in the onsite repository and has no offsite "
                    "copy; choose another restore point."
                )
        restore = Restore(
            id=uuid.uuid4(),
            tenant_id=point.tenant_id,
            vm_id=vm.id,
            restore_point_id=point.id,
            restore_point_created_at=point.created_at,
            type=restore_type,
            target=target,
            target_params=target_params,
            secrets_encrypted=secrets,
            state=(RestoreState.AWAITING_APPROVAL if needs_approval else RestoreState.REQUESTED).value,
            approval_required=needs_approval,
            source_location=source,
            requested_at=ticket.requested_at if ticket else (requested_at or now),
            requested_by_key_id=principal.key_id,
            integration_id=ticket.integration_id if ticket else None,
            ticket_id=ticket.ticket_id if ticket else None,
        )
        await self.repo.add(restore)  # before its job: the catalog's foreign keys want it first
        self._job_of[restore.id] = None
        if needs_approval:
            restore.target_params = {**target_params, "job_kind": kind.value}
        else:
            await self._queue_job(restore, kind, vm, point.policy_id, target_host_id, principal.key_id)
        return restore

    async def _queue_job(
        self,
        restore: Restore,
        kind: JobKind,
        vm: VirtualMachine,
        policy_id: uuid.UUID | None,
        target_host_id: uuid.UUID | None,
        key_id: uuid.UUID | None,
    ) -> None:
        now = self.clock.now()
        job = Job(
            id=uuid.uuid4(),
            kind=kind.value,
            state=JobState.QUEUED.value,
            trigger=JobTrigger.RESTORE.value,
            priority=PRIORITY[kind],
            tenant_id=restore.tenant_id,
            vm_id=vm.id,
            policy_id=policy_id,
            restore_id=restore.id,
            target_host_id=target_host_id,
            dispatch_host_id=None if kind in GUEST_JOB_KINDS else (target_host_id or vm.host_id),
            created_at=now,
            created_by_key_id=key_id,
            not_before=now,
            attempt=0,
            max_attempts=2,
            params={},
        )
        await self.jobs.add(job, flush=False)
        self._job_of[restore.id] = job

    async def approve(self, principal: Principal, restore_id: uuid.UUID) -> Restore:
        """An operator lets a restore over an existing VM go ahead: its job is queued now. The SLA
        clocks have run since the request: the wait is the provider's, as it is in reality."""
        principal.require_operator("approve restores")
        restore = await self._awaiting(principal, restore_id)
        vm = await self.inventory.get_vm(restore.vm_id, None)
        if vm is None or vm.gone_at is not None:
            raise Conflict(f"The VM of restore {restore_id} no longer exists; reject the restore instead.")
        if restore.restore_point_id is None:
            raise Conflict(
                f"The restore point of restore {restore_id} was removed; reject the restore instead."
            )
        point = await self.points.get(restore.restore_point_id, None)
        now = self.clock.now()
        restore.state = RestoreState.REQUESTED.value
        restore.decided_at = now
        restore.decided_by_key_id = principal.key_id
        kind = JobKind(str(restore.target_params.get("job_kind", JobKind.RESTORE.value)))
        await self._queue_job(restore, kind, vm, point.policy_id if point else None, None, principal.key_id)
        await self.session.flush()
        return restore

    async def reject(self, principal: Principal, restore_id: uuid.UUID, reason: str) -> Restore:
        principal.require_operator("reject restores")
        restore = await self._awaiting(principal, restore_id)
        now = self.clock.now()
        restore.state = RestoreState.CANCELLED.value
        restore.decided_at = now
        restore.decided_by_key_id = principal.key_id
        restore.completed_at = now
        restore.error = f"rejected by an operator: {reason}"
        restore.secrets_encrypted = None
        return restore

    async def _awaiting(self, principal: Principal, restore_id: uuid.UUID) -> Restore:
        scoped = await self.get(principal, restore_id)  # tenant scope: 404 for another tenant's
        restore = await self.repo.get_for_update(scoped.id)
        if restore is None:
            raise NotFound(f"Restore {restore_id} does not exist.")
        if restore.state != RestoreState.AWAITING_APPROVAL.value:
            raise Conflict(f"Restore {restore_id} is {restore.state}, not awaiting approval.")
        return restore

    async def to_read(self, restores: list[Restore]) -> list[RestoreRead]:
        jobs = await self.repo.jobs_for([r.id for r in restores if r.id not in self._job_of])
        jobs.update((rid, job) for rid, job in self._job_of.items() if job is not None)
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
                    approval_required=restore.approval_required,
                    decided_at=restore.decided_at,
                    source_location=restore.source_location,
                    requested_at=restore.requested_at,
                    initiated_at=restore.initiated_at,
                    completed_at=restore.completed_at,
                    job_id=job.id if job else None,
                    progress=job_progress(job, now) if job else None,
                    error=restore.error,
                    result=restore.result,
                    integration_id=restore.integration_id,
                    ticket_id=restore.ticket_id,
                    download_url=(
                        f"/api/v1/restores/{restore.id}/archive"
                        if restore.type == "files"
                        and restore.target == "archive"
                        and restore.state == "succeeded"
                        and not restore.result.get("archive_expired")
                        else None
                    ),
                )
            )
        return reads


@dataclass(frozen=True)
class Archive:
    export_id: str
    stream: str
    file_name: str
    media_type: str


#: The one stream of a file restore's export, by archive format.
ARCHIVE_STREAMS = {"tar": ("archive.tar", "application/x-tar"), "zip": ("archive.zip", "application/zip")}


def archive_of(restore: Restore) -> Archive:
    """Where a finished archive restore's archive is; Conflict while there is none to download."""
    if restore.type != "files" or restore.target != "archive":
        raise Conflict(f"Restore {restore.id} does not produce an archive (it is a {restore.type} restore).")
    if restore.state != RestoreState.SUCCEEDED.value:
        raise Conflict(f"The archive of restore {restore.id} is not ready: the restore is {restore.state}.")
    if restore.result.get("archive_expired"):
        raise Conflict(
            f"The archive of restore {restore.id} expired at {restore.result.get('archive_expired_at')} "
            "and was removed; request the files again."
        )
    fmt = str(restore.target_params.get("archive_format", "tar"))
    stream, media_type = ARCHIVE_STREAMS[fmt]
    export_id = str(restore.result.get("export_id") or "")
    if not export_id:
        raise Conflict(f"Restore {restore.id} recorded no archive.")
    taken = (restore.restore_point_created_at or restore.requested_at).strftime("%Y%m%d-%H%M")
    return Archive(export_id, stream, f"restore-{taken}-{str(restore.id)[:8]}.{fmt}", media_type)
