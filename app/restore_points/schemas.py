from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from app.schemas import OutputModel


class RestorePointDisk(BaseModel):
    key: int
    label: str
    size: int
    change_id: str | None = None
    bytes_read: int = 0
    bytes_new: int = 0
    bytes_stored: int = 0
    used_cbt: bool = False


class RestorePointStream(BaseModel):
    """A database dump or file-set archive in an application restore point."""

    name: str
    engine: str
    instance: str | None = None
    database: str | None = None
    size: int
    bytes_new: int = 0
    bytes_stored: int = 0


class RestorePointRead(OutputModel):
    id: uuid.UUID
    tenant_id: uuid.UUID
    vm_id: uuid.UUID
    vm_name: str
    policy_id: uuid.UUID | None
    job_id: uuid.UUID | None
    created_at: datetime
    kind: str = Field(description="image (the VM's disks) or application (databases and file sets)")
    location: str = Field(description="Where the point was taken to: onsite")
    onsite: bool = Field(description="The onsite repository still holds it (onsite retention may remove it)")
    copy_status: str = Field(
        description="Its offsite copy: none (the policy makes none), copying, offsite (complete, restorable "
        "from there), copy_failed (copy_error says why; tried again), pruned (offsite retention removed it)"
    )
    copy_error: str | None = None
    copied_at: datetime | None = None
    consistency: str = Field(description="crash or application")
    size_bytes: int = Field(description="Sum of the disks' (or streams') sizes")
    bytes_read: int = Field(description="Read from the datastore by this backup")
    bytes_new: int = Field(description="New data this backup added to the repository (before compression)")
    bytes_stored: int = Field(description="Bytes this backup added to the repository (compressed, encrypted)")
    dedup_ratio: float | None = Field(
        description="size_bytes / bytes_stored: how much smaller this point's increment is than the VM; "
        "null when the backup stored nothing new"
    )
    used_cbt: bool
    disks: list[RestorePointDisk]
    streams: list[RestorePointStream] = Field(default_factory=list)
    warnings: list[str]
