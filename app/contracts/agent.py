"""The agent channel: what a proxy sends and receives."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_version: str = Field(max_length=40)
    hostname: str = Field(max_length=255)
    running_jobs: int = Field(default=0, ge=0)


class ServedHost(BaseModel):
    id: uuid.UUID
    moid: str
    name: str
    vcenter_id: uuid.UUID


class HeartbeatAck(BaseModel):
    proxy_id: uuid.UUID
    name: str
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
    url: str = Field(description="file:///path (more backends later).")
    passphrase: str | None = Field(default=None, repr=False)


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


class CleanupParams(BaseModel):
    snapshot_name: str = Field(description="Remove the snapshot of this name from the VM, if it is there.")


class JobAssignment(BaseModel):
    job_id: uuid.UUID
    kind: str
    attempt: int
    lease_expires_at: datetime
    lease_s: float
    vm: VmRef
    vcenter: VCenterAccess
    repository: RepositoryAccess
    backup: BackupParams | None = None
    restore: RestoreParams | None = None
    cleanup: CleanupParams | None = None


class ClaimResponse(BaseModel):
    jobs: list[JobAssignment]


class ProgressReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phase: str = Field(max_length=40)
    bytes_total: int = Field(default=0, ge=0)
    bytes_read: int = Field(default=0, ge=0)
    bytes_new: int = Field(default=0, ge=0)
    bytes_stored: int = Field(default=0, ge=0)
    warnings: list[str] = Field(default_factory=list, max_length=50)


class ProgressAck(BaseModel):
    lease_expires_at: datetime
    cancel_requested: bool


class DiskResult(BaseModel):
    key: int
    label: str
    size: int = Field(ge=0)
    change_id: str | None = None
    bytes_read: int = Field(default=0, ge=0)
    bytes_new: int = Field(default=0, ge=0)
    bytes_stored: int = Field(default=0, ge=0)
    chunks: int = Field(default=0, ge=0)
    chunks_new: int = Field(default=0, ge=0)
    chunks_zero: int = Field(default=0, ge=0)
    used_cbt: bool = False


class BackupResult(BaseModel):
    restore_point_id: uuid.UUID
    created_at: datetime
    consistency: str = Field(description="crash or application")
    disks: list[DiskResult]


class RestoreResult(BaseModel):
    vm_moid: str
    vm_name: str


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: str = Field(pattern="^(succeeded|failed|skipped|cancelled)$")
    error: str | None = Field(default=None, max_length=4000)
    error_kind: str | None = Field(default=None, pattern="^(transient|permanent)$")
    warnings: list[str] = Field(default_factory=list, max_length=50)
    backup: BackupResult | None = None
    restore: RestoreResult | None = None
    progress: ProgressReport | None = Field(default=None, description="The final progress figures.")


class CleanupTarget(BaseModel):
    """A vCenter whose VMs may carry snapshots this proxy left behind."""

    vcenter: VCenterAccess
    snapshot_prefix: str


class CleanupTargets(BaseModel):
    targets: list[CleanupTarget]
