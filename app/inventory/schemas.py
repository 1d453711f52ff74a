from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from app.schemas import OutputModel


class ProxyRef(OutputModel):
    id: uuid.UUID
    name: str
    status: str


class HostRead(OutputModel):
    id: uuid.UUID
    vcenter_id: uuid.UUID
    tenant_id: uuid.UUID
    moid: str
    name: str
    cluster: str | None
    datacenter: str | None
    connection_state: str
    power_state: str
    in_maintenance_mode: bool
    first_seen_at: datetime
    last_seen_at: datetime
    gone_at: datetime | None
    proxies: list[ProxyRef] = Field(description="Proxies registered for this host.")
    proxy_status: str = Field(
        description="online, stale or offline: the best of its proxies; 'none' if none."
    )
    protected_vm_count: int
    needs_proxy: bool = Field(description="Protected VMs run here and no proxy for it is online.")


class DatastoreRead(OutputModel):
    id: uuid.UUID
    vcenter_id: uuid.UUID
    tenant_id: uuid.UUID
    moid: str
    name: str
    datacenter: str | None
    type: str
    url: str
    capacity_bytes: int
    free_bytes: int
    free_percent: float
    space_status: str = Field(description="ok; warning below 15% free; critical below 10% free.")
    accessible: bool
    first_seen_at: datetime
    last_seen_at: datetime
    gone_at: datetime | None


class DiskRead(BaseModel):
    key: int
    label: str
    capacity_bytes: int
    datastore_moid: str | None
    file_name: str


class HostRef(OutputModel):
    id: uuid.UUID
    name: str


class DatastoreRef(OutputModel):
    id: uuid.UUID
    name: str
    free_percent: float
    space_status: str


class ProtectionRead(BaseModel):
    status: str = Field(description="protected, unprotected, excluded or conflict")
    policy_id: uuid.UUID | None
    policy_name: str | None
    reason: str | None
    conflicting_policy_ids: list[uuid.UUID]


class VmRead(OutputModel):
    id: uuid.UUID
    vcenter_id: uuid.UUID
    tenant_id: uuid.UUID
    moid: str
    instance_uuid: str
    bios_uuid: str | None
    name: str
    power_state: str
    host: HostRef | None
    datastores: list[DatastoreRef]
    disks: list[DiskRead]
    guest_os: str | None
    folder_path: str
    tags: list[str]
    tools_running: bool
    is_template: bool
    first_seen_at: datetime
    last_seen_at: datetime
    gone_at: datetime | None
    protection: ProtectionRead
    proxy_status: str = Field(description="Status of the best proxy serving the VM's host, or 'none'.")
    warnings: list[str] = Field(description="What keeps this VM from meeting its requirements.")


class SyncCounts(BaseModel):
    added: int = 0
    updated: int = 0
    gone: int = 0
    returned: int = 0
    total: int = 0


class SyncReport(BaseModel):
    vcenter_id: uuid.UUID
    synced_at: datetime
    hosts: SyncCounts
    datastores: SyncCounts
    vms: SyncCounts
    tags_available: bool
