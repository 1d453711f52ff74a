"""Plain data returned by the vCenter client; nothing here depends on pyvmomi."""

from __future__ import annotations

from dataclasses import dataclass, field


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
