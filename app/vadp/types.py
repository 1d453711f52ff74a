"""Plain data returned by the vCenter client; nothing here depends on pyvmomi."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple


@dataclass(frozen=True, repr=False)
class VCenterEndpoint:
    """How to reach one vCenter.

    ``url`` is what the operator registered: ``https://vc.example.com`` (path ``/sdk``
    implied) or ``http://127.0.0.1:8989/sdk``. The password never appears in ``repr``.
    """

    url: str
    username: str
    password: str
    verify_tls: bool = True
    timeout_s: float = 30.0

    def __repr__(self) -> str:
        return f"VCenterEndpoint(url={self.url!r}, verify_tls={self.verify_tls})"


@dataclass(frozen=True)
class AboutInfo:
    """What the vCenter says about itself (``ServiceContent.about``)."""

    name: str
    full_name: str
    version: str
    build: str
    api_type: str
    instance_uuid: str


@dataclass(frozen=True)
class HostInfo:
    moid: str
    name: str
    cluster: str | None
    datacenter: str | None
    connection_state: str
    power_state: str
    in_maintenance_mode: bool


@dataclass(frozen=True)
class DatastoreInfo:
    moid: str
    name: str
    type: str
    url: str
    capacity_bytes: int
    free_bytes: int
    accessible: bool
    datacenter: str | None


@dataclass(frozen=True)
class DiskInfo:
    key: int
    label: str
    capacity_bytes: int
    datastore_moid: str | None
    file_name: str


@dataclass(frozen=True)
class VmInfo:
    moid: str
    instance_uuid: str
    bios_uuid: str | None
    name: str
    power_state: str
    host_moid: str | None
    datastore_moids: tuple[str, ...]
    disks: tuple[DiskInfo, ...]
    guest_os: str | None
    folder_path: str
    tags: tuple[str, ...] = field(default_factory=tuple)
    tools_running: bool = False
    is_template: bool = False


@dataclass(frozen=True)
class InventorySnapshot:
    """One consistent read of a vCenter's inventory."""

    about: AboutInfo
    hosts: tuple[HostInfo, ...]
    datastores: tuple[DatastoreInfo, ...]
    vms: tuple[VmInfo, ...]
    tags_available: bool


# --- The data path (proxy agent): handles and facts -------------------------------------------
#
# Handles are managed-object ids wrapped in a type, so that a snapshot can never be passed
# where a VM is expected; they are plain, hashable and serializable (a restarted proxy can
# rebuild one from the catalog), and only :mod:`app.vadp` turns them into pyvmomi objects.


@dataclass(frozen=True)
class VmHandle:
    """An opaque reference to one VM of one vCenter (its managed-object id)."""

    moid: str


@dataclass(frozen=True)
class SnapshotHandle:
    """An opaque reference to one snapshot, and the VM it belongs to."""

    moid: str
    vm_moid: str

    @property
    def vm(self) -> VmHandle:
        return VmHandle(self.vm_moid)


@dataclass(frozen=True)
class DatastoreRef:
    moid: str
    name: str


@dataclass(frozen=True)
class HostRef:
    moid: str
    name: str


@dataclass(frozen=True)
class VmDisk:
    """A virtual disk as the data path needs it.

    ``backing`` is ``flat`` (FlatVer2: VMFS/NFS ``-flat.vmdk``), ``sesparse``, ``sparse``,
    ``rdm`` or ``other``; ``has_parent`` is true for a delta disk on top of a chain (which
    is what a VM with snapshots writes to). ``change_id`` is the CBT change id of the disk
    as the vCenter reports it (set on snapshots of VMs with CBT on; never on the simulator).
    """

    key: int
    label: str
    capacity_bytes: int
    file_name: str
    datastore: DatastoreRef | None
    controller_key: int | None
    unit_number: int | None
    backing: str
    has_parent: bool = False
    thin_provisioned: bool | None = None
    eagerly_scrub: bool | None = None
    disk_mode: str | None = None
    change_id: str | None = None


@dataclass(frozen=True)
class VmFacts:
    """What the proxy needs to know about a VM before backing it up."""

    handle: VmHandle
    name: str
    instance_uuid: str
    power_state: str  # poweredOn | poweredOff | suspended
    tools_running_status: str  # guestToolsRunning | guestToolsNotRunning | ... ("" if unknown)
    host: HostRef | None
    datastores: tuple[DatastoreRef, ...]
    disks: tuple[VmDisk, ...]
    cbt_enabled: bool
    has_snapshots: bool
    vmx_path: str

    @property
    def tools_running(self) -> bool:
        return self.tools_running_status == "guestToolsRunning"

    def disk(self, key: int) -> VmDisk:
        for disk in self.disks:
            if disk.key == key:
                return disk
        raise KeyError(f"VM {self.name!r} has no disk with key {key}")


@dataclass(frozen=True)
class SnapshotResult:
    """A snapshot taken for a backup; ``warning`` says why it is only crash-consistent."""

    snapshot: SnapshotHandle
    quiesced: bool
    warning: str | None = None
    # The VM was powered off as the snapshot was taken (read right before the task, not when the
    # backup began): its disks are consistent as they are.
    powered_off: bool = False


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot of a VM's snapshot tree."""

    handle: SnapshotHandle
    name: str
    description: str
    created_at: datetime | None
    quiesced: bool
    power_state: str
    parent_moid: str | None


class DatastoreSpace(NamedTuple):
    name: str
    capacity_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class CreatedVm:
    """A VM created from a captured configuration.

    ``disk_keys`` maps each captured disk key to the key of the new VM's disk, which is what
    :func:`app.vadp.restore.upload_disk` wants; ``warnings`` lists what could not be recreated
    (a network missing on the target host, ...).
    """

    handle: VmHandle
    name: str
    disk_keys: dict[int, int]
    warnings: tuple[str, ...] = ()
