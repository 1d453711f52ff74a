"""The agent channel: what a proxy sends and receives."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas import Instant

#: Every snapshot the service takes is named ``<prefix><proxy id>-<job id>-<attempt>``.
SNAPSHOT_NAME_PREFIX = "vmrecovery-"


def snapshot_attempt(name: str, job_id: uuid.UUID) -> int | None:
    """The attempt of ``job_id`` whose snapshot is named ``name`` (None: another job's, or not
    ours). The control plane names them (``app.jobs.job_params.snapshot_name``); an agent reads
    them back to tell its own job's leftovers from another attempt's snapshot."""
    head, _, attempt = name.rpartition("-")
    if not (name.startswith(SNAPSHOT_NAME_PREFIX) and head.endswith(f"-{job_id}") and attempt.isdigit()):
        return None
    return int(attempt)


#: Upper bound of the byte and item counts agents report: 4 PiB is far beyond any disk (vSphere
#: stops at 62 TB), and sums of thousands of them still fit the catalog's 64-bit columns (a
#: larger number was a 500, not a 422).
COUNT_MAX = 2**52


class ApplicationInstance(BaseModel):
    """An application a guest agent can protect in its VM, as configured in the agent's own file.

    Credentials never leave the VM: policies name an ``engine`` and an ``instance``, the agent
    knows how to reach it.
    """

    engine: str = Field(pattern="^(postgresql|mysql)$")
    instance: str = Field(default="default", min_length=1, max_length=100)
    version: str | None = Field(default=None, max_length=200)
    databases: list[str] = Field(default_factory=list, max_length=10000)
    error: str | None = Field(default=None, max_length=2000, description="Why it could not be reached.")


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_version: str = Field(max_length=40)
    hostname: str = Field(max_length=255)
    running_jobs: int = Field(default=0, ge=0, le=COUNT_MAX)
    applications: list[ApplicationInstance] | None = Field(
        default=None, max_length=100, description="Guest agents: what they can protect (null: unchanged)."
    )


class ServedHost(BaseModel):
    id: uuid.UUID
    moid: str
    name: str
    vcenter_id: uuid.UUID


class HeartbeatAck(BaseModel):
    proxy_id: uuid.UUID
    name: str
    kind: str = "proxy"
    vm_id: uuid.UUID | None = Field(default=None, description="Guest agents: the VM they run in.")
    server_time: datetime
    heartbeat_interval_s: float
    max_concurrent_jobs: int
    hosts: list[ServedHost]


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    capacity: int = Field(ge=1, le=64, description="How many jobs the agent can start now.")
    wait_s: float = Field(default=20.0, ge=0, le=60, description="Long-poll: wait this long for work.")


class VmRef(BaseModel):
    id: uuid.UUID
    instance_uuid: str
    moid: str
    name: str


class VCenterAccess(BaseModel):
    """Credentials for one job. The agent keeps them in memory only, never logs them."""

    id: uuid.UUID
    url: str
    username: str
    password: str = Field(repr=False)
    verify_tls: bool


class RepositoryAccess(BaseModel):
    url: str = Field(description="file:///path, or s3://BUCKET/PREFIX?endpoint=URL&region=R")
    passphrase: str | None = Field(default=None, repr=False)
    access_key_id: str | None = Field(default=None, repr=False, description="Object stores only.")
    secret_access_key: str | None = Field(default=None, repr=False)


class PreviousDisk(BaseModel):
    key: int
    change_id: str | None


class PreviousPoint(BaseModel):
    id: uuid.UUID
    disks: list[PreviousDisk]


class BackupParams(BaseModel):
    restore_point_id: uuid.UUID
    quiesce: bool
    snapshot_name: str
    previous: PreviousPoint | None = None
    guest: BackupParamsApp | None = None


class RestoreParams(BaseModel):
    restore_id: uuid.UUID
    restore_point_id: uuid.UUID
    target: str = Field(description="original or new")
    new_name: str | None = None
    host_moid: str | None = None
    datastore_moid: str | None = None
    datastore_name: str | None = None
    force: bool = False
    power_on: bool = False


class GuestQuiesce(BaseModel):
    """How a proxy asks the VM's guest agent to hold applications still around the snapshot."""

    freeze_timeout_s: float = Field(description="Give up and take a crash-consistent snapshot after this.")


class BackupParamsApp(BaseModel):
    """Present on a backup when the policy is application-aware and the VM has a guest agent."""

    quiesce: GuestQuiesce


class FileSelection(BaseModel):
    disk: int = Field(description="Disk key (from the restore point's disks).")
    volume: str = Field(description="Volume id from GET /restore-points/{id}/volumes ('1', 'lvm:vg/lv').")
    path: str = Field(description="Absolute path inside the volume's filesystem.")


class GuestDelivery(BaseModel):
    """Files pushed into the running VM through vCenter guest operations (VMware Tools)."""

    username: str
    password: str = Field(repr=False)
    target_directory: str | None = Field(default=None, description="None: back to where each file was.")
    overwrite: bool = False


class FileRestoreParams(BaseModel):
    restore_id: uuid.UUID
    restore_point_id: uuid.UUID
    files: list[FileSelection]
    delivery: str = Field(description="archive or guest")
    archive_format: str = Field(default="tar", description="tar or zip")
    export_id: str = Field(description="Where the archive goes in the repository (delivery 'archive').")
    export_repository: RepositoryAccess | None = Field(
        default=None,
        description="The repository the archive goes to: the onsite one, where downloads and "
        "expiry find it, also when the files are read from the offsite copy. None: the job's.",
    )
    guest: GuestDelivery | None = None


class ApplicationItemSpec(BaseModel):
    """One item of a policy's application protection (see app.policies.schemas)."""

    type: str = Field(description="postgresql, mysql or files")
    instance: str = "default"
    databases: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)


class AppBackupParams(BaseModel):
    restore_point_id: uuid.UUID
    items: list[ApplicationItemSpec]
    previous_restore_point_id: uuid.UUID | None = Field(
        default=None,
        description="The VM's latest application point: its streams' chunker parameters are reused.",
    )


class AppRestoreParams(BaseModel):
    restore_id: uuid.UUID
    restore_point_id: uuid.UUID
    stream: str = Field(description="The stream to restore, as named in the restore point.")
    engine: str = Field(description="postgresql, mysql or files")
    instance: str = "default"
    database: str | None = Field(default=None, description="Source database name (database streams).")
    target_database: str | None = Field(default=None, description="Restore under this name; None: its own.")
    overwrite: bool = Field(default=False, description="Replace an existing database of the target name.")
    target_directory: str | None = Field(default=None, description="File sets: where to extract.")
    paths: list[str] = Field(default_factory=list, description="File sets: only these paths (empty: all).")


class QuiesceParams(BaseModel):
    backup_job_id: uuid.UUID
    hold_max_s: float = Field(description="Thaw on its own after this, whatever the proxy says.")


class OffsiteCopyParams(BaseModel):
    restore_point_id: uuid.UUID
    target: RepositoryAccess = Field(description="The offsite repository (shares the onsite keys).")


class CleanupParams(BaseModel):
    snapshot_name: str = Field(description="Remove the snapshot of this name from the VM, if it is there.")


class JobAssignment(BaseModel):
    job_id: uuid.UUID
    kind: str
    attempt: int
    lease_expires_at: datetime
    lease_s: float
    vm: VmRef
    vcenter: VCenterAccess | None = Field(
        default=None, description="Proxy jobs only; never sent to guest agents."
    )
    repository: RepositoryAccess
    backup: BackupParams | None = None
    restore: RestoreParams | None = None
    cleanup: CleanupParams | None = None
    file_restore: FileRestoreParams | None = None
    app_backup: AppBackupParams | None = None
    app_restore: AppRestoreParams | None = None
    quiesce: QuiesceParams | None = None
    offsite_copy: OffsiteCopyParams | None = None

    def vcenter_access(self) -> VCenterAccess:
        if self.vcenter is None:
            raise ValueError(f"job {self.job_id} ({self.kind}) carries no vCenter access")
        return self.vcenter


class ClaimResponse(BaseModel):
    jobs: list[JobAssignment]


class ProgressReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phase: str = Field(max_length=40)
    bytes_total: int = Field(default=0, ge=0, le=COUNT_MAX)
    bytes_read: int = Field(default=0, ge=0, le=COUNT_MAX)
    bytes_new: int = Field(default=0, ge=0, le=COUNT_MAX)
    bytes_stored: int = Field(default=0, ge=0, le=COUNT_MAX)
    warnings: list[str] = Field(default_factory=list, max_length=50)


class ProgressAck(BaseModel):
    lease_expires_at: datetime
    cancel_requested: bool
    release_requested: bool = Field(
        default=False, description="Quiesce jobs: the snapshot is taken; thaw now."
    )


class DiskResult(BaseModel):
    key: int
    label: str
    size: int = Field(ge=0, le=COUNT_MAX)
    change_id: str | None = None
    bytes_read: int = Field(default=0, ge=0, le=COUNT_MAX)
    bytes_new: int = Field(default=0, ge=0, le=COUNT_MAX)
    bytes_stored: int = Field(default=0, ge=0, le=COUNT_MAX)
    chunks: int = Field(default=0, ge=0, le=COUNT_MAX)
    chunks_new: int = Field(default=0, ge=0, le=COUNT_MAX)
    chunks_zero: int = Field(default=0, ge=0, le=COUNT_MAX)
    used_cbt: bool = False


class BackupResult(BaseModel):
    restore_point_id: uuid.UUID
    created_at: Instant
    consistency: str = Field(description="crash or application")
    disks: list[DiskResult]


class RestoreResult(BaseModel):
    vm_moid: str
    vm_name: str


class StreamResult(BaseModel):
    name: str = Field(max_length=255)
    engine: str = Field(max_length=40)
    instance: str | None = Field(default=None, max_length=100)
    database: str | None = Field(default=None, max_length=255)
    size: int = Field(ge=0, le=COUNT_MAX)
    bytes_new: int = Field(default=0, ge=0, le=COUNT_MAX)
    bytes_stored: int = Field(default=0, ge=0, le=COUNT_MAX)
    chunks: int = Field(default=0, ge=0, le=COUNT_MAX)
    chunks_new: int = Field(default=0, ge=0, le=COUNT_MAX)
    metadata: dict[str, Any] = Field(default_factory=dict)


class AppBackupResult(BaseModel):
    restore_point_id: uuid.UUID
    created_at: Instant
    streams: list[StreamResult] = Field(max_length=10000)

    @model_validator(mode="after")
    def _sizes_add_up(self) -> AppBackupResult:
        # The point's size is their sum, in a 64-bit column.
        if sum(stream.size for stream in self.streams) > COUNT_MAX:
            raise ValueError(f"the streams' sizes add up to more than {COUNT_MAX} bytes")
        return self


class FileRestoreResult(BaseModel):
    delivery: str
    files: int = Field(ge=0, description="Regular files delivered")
    bytes: int = Field(ge=0, description="Bytes of file content delivered")
    export_id: str | None = None
    archive_name: str | None = None
    archive_size: int | None = Field(default=None, ge=0, le=COUNT_MAX)
    archive_sha256: str | None = None
    skipped: list[str] = Field(default_factory=list, max_length=1000)


class AppRestoreResult(BaseModel):
    engine: str
    database: str | None = None
    target_directory: str | None = None
    bytes: int = Field(default=0, ge=0, le=COUNT_MAX)
    files: int | None = Field(default=None, ge=0, le=COUNT_MAX)


class OffsiteCopyResult(BaseModel):
    chunks: int = Field(ge=0, description="Distinct chunks the point references")
    chunks_copied: int = Field(ge=0, description="Those the offsite repository lacked")
    bytes_copied: int = Field(ge=0, description="Stored bytes that travelled")


class QuiesceResult(BaseModel):
    frozen_at: datetime | None
    thawed_at: datetime | None
    held_until_release: bool = Field(description="The freeze lasted until the proxy released it.")
    engines: list[str] = Field(default_factory=list)


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: str = Field(pattern="^(succeeded|failed|skipped|cancelled)$")
    error: str | None = Field(default=None, max_length=4000)
    error_kind: str | None = Field(default=None, pattern="^(transient|permanent)$")
    warnings: list[str] = Field(default_factory=list, max_length=50)
    backup: BackupResult | None = None
    restore: RestoreResult | None = None
    app_backup: AppBackupResult | None = None
    file_restore: FileRestoreResult | None = None
    app_restore: AppRestoreResult | None = None
    quiesce: QuiesceResult | None = None
    offsite_copy: OffsiteCopyResult | None = None
    progress: ProgressReport | None = Field(default=None, description="The final progress figures.")


class QuiesceStatus(BaseModel):
    """What a proxy sees of the guest freeze it asked for."""

    job_id: uuid.UUID
    state: str = Field(description="queued, running, succeeded, failed, cancelled or missed")
    frozen: bool = Field(description="The guest reports its applications frozen right now.")
    result: QuiesceResult | None = None
    error: str | None = None


class CleanupTarget(BaseModel):
    """A vCenter whose VMs may carry snapshots this proxy left behind."""

    vcenter: VCenterAccess
    snapshot_prefix: str


class CleanupTargets(BaseModel):
    targets: list[CleanupTarget]
