"""Property paging and snapshot assembly for shapes the simulator cannot produce.

The simulator ignores ``maxObjects`` (it never pages), keeps VMs of a vApp in a folder and
has no inaccessible VMs; real vCenters do all of these, so they are checked on synthetic
PropertyCollector answers here.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pyVmomi import vim

from app.vadp.inventory import build_snapshot
from app.vadp.properties import ObjectProperties, retrieve
from app.vadp.types import AboutInfo

ABOUT = AboutInfo("vc", "vc 8", "8.0", "1", "VirtualCenter", "uuid")


def ref(kind: Any, moid: str) -> Any:
    return kind(moid)


def content(obj: Any, **props: Any) -> SimpleNamespace:
    prop_set = [SimpleNamespace(name=name.replace("__", "."), val=val) for name, val in props.items()]
    return SimpleNamespace(obj=obj, propSet=prop_set)


class PagingCollector:
    """Answers in pages of two, like a vCenter does for large inventories."""

    def __init__(self, items: list[SimpleNamespace]) -> None:
        self.items = items
        self.calls: list[tuple[str, Any]] = []

    def _page(self, start: int) -> SimpleNamespace:
        end = start + 2
        token = str(end) if end < len(self.items) else None
        return SimpleNamespace(objects=self.items[start:end], token=token)

    def RetrievePropertiesEx(self, specSet: list[Any], options: Any) -> SimpleNamespace:
        self.calls.append(("first", options.maxObjects))
        return self._page(0)

    def ContinueRetrievePropertiesEx(self, token: str) -> SimpleNamespace:
        self.calls.append(("continue", token))
        return self._page(int(token))


def test_retrieve_follows_tokens() -> None:
    items = [content(ref(vim.HostSystem, f"host-{i}"), name=f"h{i}") for i in range(5)]
    collector = PagingCollector(items)
    result = list(retrieve(collector, spec=object(), page_size=2))
    assert [(o.moid, o.props) for o in result] == [(f"host-{i}", {"name": f"h{i}"}) for i in range(5)]
    assert all(o.type is vim.HostSystem for o in result)
    assert collector.calls == [("first", 2), ("continue", "2"), ("continue", "4")]


def test_retrieve_handles_an_empty_answer() -> None:
    class Empty:
        def RetrievePropertiesEx(self, specSet: list[Any], options: Any) -> None:
            return None  # what a vCenter returns when nothing matches

    assert list(retrieve(Empty(), spec=object())) == []


def obj(kind: Any, moid: str, **props: Any) -> ObjectProperties:
    return ObjectProperties(moid=moid, type=kind, props={k.replace("__", "."): v for k, v in props.items()})


def disk(key: int, kb: int, in_bytes: int | None, datastore: str) -> Any:
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
        fileName=f"[ds] vm/disk{key}.vmdk", datastore=ref(vim.Datastore, datastore)
    )
    return vim.vm.device.VirtualDisk(
        key=key,
        capacityInKB=kb,
        capacityInBytes=in_bytes,
        backing=backing,
        deviceInfo=vim.Description(label=f"Hard disk {key}", summary=""),
    )


def test_vapp_pod_standalone_host_and_inaccessible_vm() -> None:
    objects = [
        obj(vim.Folder, "group-d1", name="Datacenters"),
        obj(vim.Folder, "group-f1", name="EMEA", parent=ref(vim.Folder, "group-d1")),
        obj(vim.Datacenter, "datacenter-1", name="Paris", parent=ref(vim.Folder, "group-f1")),
        obj(vim.Folder, "group-v1", name="vm", parent=ref(vim.Datacenter, "datacenter-1")),
        obj(vim.Folder, "group-v2", name="prod", parent=ref(vim.Folder, "group-v1")),
        obj(vim.Folder, "group-h1", name="host", parent=ref(vim.Datacenter, "datacenter-1")),
        obj(vim.ComputeResource, "domain-s1", name="esx1", parent=ref(vim.Folder, "group-h1")),
        obj(vim.HostSystem, "host-1", name="esx1", parent=ref(vim.ComputeResource, "domain-s1")),
        obj(vim.Folder, "group-s1", name="datastore", parent=ref(vim.Datacenter, "datacenter-1")),
        obj(vim.StoragePod, "group-p1", name="pod", parent=ref(vim.Folder, "group-s1")),
        obj(vim.Datastore, "datastore-1", name="ds1", parent=ref(vim.StoragePod, "group-p1")),
        obj(vim.VirtualApp, "resgroup-v1", name="shop", parentFolder=ref(vim.Folder, "group-v2")),
        obj(
            vim.VirtualMachine,
            "vm-1",
            name="web",
            parentVApp=ref(vim.VirtualApp, "resgroup-v1"),
            config__instanceUuid="5000-1",
            config__hardware__device=[
                disk(2000, 1, 3 * 1024**3, "datastore-1"),
                vim.vm.device.VirtualCdrom(key=3000),
            ],
            guest__toolsRunningStatus="guestToolsRunning",
        ),
        obj(vim.VirtualMachine, "vm-2", name="broken", parent=ref(vim.Folder, "group-v2")),
    ]
    snapshot = build_snapshot(ABOUT, objects, None)

    assert not snapshot.tags_available
    (host,) = snapshot.hosts
    assert (host.cluster, host.datacenter, host.power_state) == (None, "Paris", "unknown")
    (datastore,) = snapshot.datastores
    assert datastore.datacenter == "Paris"
    web, broken = sorted(snapshot.vms, key=lambda vm: vm.name != "web")
    assert web.folder_path == "/Paris/vm/prod/shop"
    assert web.tools_running
    assert [(d.key, d.capacity_bytes, d.datastore_moid) for d in web.disks] == [
        (2000, 3 * 1024**3, "datastore-1")  # capacityInBytes wins over capacityInKB
    ]
    assert (broken.instance_uuid, broken.bios_uuid, broken.disks, broken.host_moid) == ("", None, (), None)
    assert broken.folder_path == "/Paris/vm/prod"
    assert (broken.power_state, broken.is_template, broken.tools_running) == ("unknown", False, False)
