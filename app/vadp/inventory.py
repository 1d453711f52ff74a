"""Reading a vCenter's inventory (hosts, datastores, VMs with disks and tags) in one go.

All managed-object properties come from one PropertyCollector read (see
:mod:`app.vadp.properties`); the parent links returned with them are resolved here, in
memory, into cluster names, datacenter names and VM folder paths, so the number of round
trips does not grow with the size of the inventory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from app.vadp.connection import connect, read_about
from app.vadp.properties import ObjectProperties, collect
from app.vadp.tags import read_vm_tags
from app.vadp.types import (
    AboutInfo,
    DatastoreInfo,
    DiskInfo,
    HostInfo,
    InventorySnapshot,
    VCenterEndpoint,
    VmInfo,
)

_NAME_AND_PARENT = ["name", "parent"]

PROPERTY_PATHS: Mapping[Any, list[str]] = {
    vim.Datacenter: ["name", "vmFolder"],
    vim.Folder: _NAME_AND_PARENT,
    vim.StoragePod: _NAME_AND_PARENT,
    vim.ClusterComputeResource: _NAME_AND_PARENT,
    vim.ComputeResource: _NAME_AND_PARENT,
    vim.VirtualApp: ["name", "parentFolder", "parentVApp"],
    vim.HostSystem: [
        *_NAME_AND_PARENT,
        "runtime.connectionState",
        "runtime.powerState",
        "runtime.inMaintenanceMode",
    ],
    vim.Datastore: [
        *_NAME_AND_PARENT,
        "summary.type",
        "summary.url",
        "summary.capacity",
        "summary.freeSpace",
        "summary.accessible",
    ],
    vim.VirtualMachine: [
        *_NAME_AND_PARENT,
        "parentVApp",
        "config.instanceUuid",
        "config.uuid",
        "config.template",
        "config.guestFullName",
        "config.hardware.device",
        "runtime.powerState",
        "runtime.host",
        "datastore",
        "guest.toolsRunningStatus",
    ],
}

_MAX_DEPTH = 128  # guards the parent walks against a (never expected) cycle


def read_inventory(endpoint: VCenterEndpoint) -> InventorySnapshot:
    """Read the whole inventory of ``endpoint`` (blocking)."""
    with connect(endpoint) as service_instance:
        about = read_about(service_instance)
        objects = collect(service_instance, PROPERTY_PATHS)
    return build_snapshot(about, objects, read_vm_tags(endpoint))


async def read_inventory_async(endpoint: VCenterEndpoint) -> InventorySnapshot:
    """:func:`read_inventory` in a worker thread, since pyVmomi blocks."""
    return await asyncio.to_thread(read_inventory, endpoint)


@dataclass(frozen=True)
class _Node:
    """An inventory container as needed to walk up the tree."""

    name: str
    parent: str | None
    is_datacenter: bool
    is_cluster: bool


def build_snapshot(
    about: AboutInfo,
    objects: Iterable[ObjectProperties],
    vm_tags: Mapping[str, tuple[str, ...]] | None,
) -> InventorySnapshot:
    """Turn the raw property read into plain data; ``vm_tags`` None means tags unavailable."""
    objects = list(objects)
    tree = _Tree({obj.moid: _node(obj) for obj in objects})
    hosts = [_host(obj, tree) for obj in objects if _is(obj, vim.HostSystem)]
    datastores = [_datastore(obj, tree) for obj in objects if _is(obj, vim.Datastore)]
    tags = vm_tags or {}
    vms = [_vm(obj, tree, tags.get(obj.moid, ())) for obj in objects if _is(obj, vim.VirtualMachine)]
    return InventorySnapshot(
        about=about,
        hosts=tuple(sorted(hosts, key=lambda h: (h.name, h.moid))),
        datastores=tuple(sorted(datastores, key=lambda d: (d.name, d.moid))),
        vms=tuple(sorted(vms, key=lambda v: (v.folder_path, v.name, v.moid))),
        tags_available=vm_tags is not None,
    )


def _is(obj: ObjectProperties, kind: Any) -> bool:
    return issubclass(obj.type, kind)


def _moid(ref: Any) -> str | None:
    return None if ref is None else str(ref._moId)


def _node(obj: ObjectProperties) -> _Node:
    if _is(obj, vim.VirtualApp):
        # A vApp's "parent" is a resource pool; where it shows in the VM tree is its folder.
        parent = obj.get("parentFolder") or obj.get("parentVApp")
    elif _is(obj, vim.VirtualMachine):
        parent = obj.get("parent") or obj.get("parentVApp")  # VMs in a vApp have no parent
    else:
        parent = obj.get("parent")
    return _Node(
        name=str(obj.get("name", obj.moid)),
        parent=_moid(parent),
        is_datacenter=_is(obj, vim.Datacenter),
        is_cluster=_is(obj, vim.ClusterComputeResource),
    )


class _Tree:
    """Parent links of the inventory, resolved without further calls to the vCenter."""

    def __init__(self, nodes: Mapping[str, _Node]) -> None:
        self._nodes = nodes

    def ancestors(self, moid: str) -> Iterable[_Node]:
        """The containers above ``moid``, nearest first."""
        current = self._nodes.get(moid)
        for _ in range(_MAX_DEPTH):
            if current is None or current.parent is None:
                return
            current = self._nodes.get(current.parent)
            if current is not None:
                yield current

    def datacenter(self, moid: str) -> str | None:
        return next((n.name for n in self.ancestors(moid) if n.is_datacenter), None)

    def folder_path(self, moid: str) -> str:
        """``/<Datacenter>/vm/<folders...>``: the path of the folder (or vApp) holding ``moid``."""
        names: list[str] = []
        for node in self.ancestors(moid):
            names.append(node.name)
            if node.is_datacenter:
                break
        return "/" + "/".join(reversed(names))


def _host(obj: ObjectProperties, tree: _Tree) -> HostInfo:
    parent = next(iter(tree.ancestors(obj.moid)), None)
    return HostInfo(
        moid=obj.moid,
        name=str(obj.get("name", obj.moid)),
        cluster=parent.name if parent is not None and parent.is_cluster else None,
        datacenter=tree.datacenter(obj.moid),
        connection_state=str(obj.get("runtime.connectionState", "unknown")),
        power_state=str(obj.get("runtime.powerState", "unknown")),
        in_maintenance_mode=bool(obj.get("runtime.inMaintenanceMode", False)),
    )


def _datastore(obj: ObjectProperties, tree: _Tree) -> DatastoreInfo:
    return DatastoreInfo(
        moid=obj.moid,
        name=str(obj.get("name", obj.moid)),
        type=str(obj.get("summary.type", "")),
        url=str(obj.get("summary.url", "")),
        capacity_bytes=int(obj.get("summary.capacity") or 0),
        free_bytes=int(obj.get("summary.freeSpace") or 0),
        accessible=bool(obj.get("summary.accessible", False)),
        datacenter=tree.datacenter(obj.moid),
    )


def _vm(obj: ObjectProperties, tree: _Tree, tags: tuple[str, ...]) -> VmInfo:
    host = _moid(obj.get("runtime.host"))
    devices = obj.get("config.hardware.device") or ()
    return VmInfo(
        moid=obj.moid,
        # Unset only for inaccessible / orphaned VMs, which have no config at all.
        instance_uuid=str(obj.get("config.instanceUuid") or ""),
        bios_uuid=obj.get("config.uuid") or None,
        name=str(obj.get("name", obj.moid)),
        power_state=str(obj.get("runtime.powerState", "unknown")),
        host_moid=host,
        datastore_moids=tuple(str(ref._moId) for ref in obj.get("datastore") or ()),
        disks=tuple(_disk(d) for d in devices if isinstance(d, vim.vm.device.VirtualDisk)),
        guest_os=obj.get("config.guestFullName") or None,
        folder_path=tree.folder_path(obj.moid),
        tags=tags,
        tools_running=obj.get("guest.toolsRunningStatus") == "guestToolsRunning",
        is_template=bool(obj.get("config.template", False)),
    )


def _disk(device: Any) -> DiskInfo:
    capacity = device.capacityInBytes or (device.capacityInKB or 0) * 1024
    backing = device.backing
    info = device.deviceInfo
    return DiskInfo(
        key=int(device.key),
        label=str(info.label) if info is not None and info.label else f"disk {device.key}",
        capacity_bytes=int(capacity),
        datastore_moid=_moid(getattr(backing, "datastore", None)),
        file_name=str(getattr(backing, "fileName", "") or ""),
    )
