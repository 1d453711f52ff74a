"""Finding a VM and reading the facts a backup needs: power and tools state, host, disks, CBT.

Also enabling Changed Block Tracking, a disk's change id as of a snapshot, and the space
left on a VM's datastores. Everything is read through the PropertyCollector, so a property
that is unset on this VM (``snapshot`` without snapshots) is simply absent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from pyVmomi import vim

from app.vadp.errors import VCenterError, VCenterErrorKind
from app.vadp.session import VCenterSession
from app.vadp.types import (
    DatastoreRef,
    DatastoreSpace,
    HostRef,
    SnapshotHandle,
    VmDisk,
    VmFacts,
    VmHandle,
)

_vm: Any = vim.vm  # pyVmomi's data-object constructors are unannotated

FACT_PATHS = (
    "name",
    "config.instanceUuid",
    "config.changeTrackingEnabled",
    "config.hardware.device",
    "config.files.vmPathName",
    "runtime.powerState",
    "runtime.host",
    "guest.toolsRunningStatus",
    "datastore",
    "snapshot.currentSnapshot",
)

_BACKINGS: tuple[tuple[Any, str], ...] = (
    (vim.vm.device.VirtualDisk.FlatVer2BackingInfo, "flat"),
    (vim.vm.device.VirtualDisk.SeSparseBackingInfo, "sesparse"),
    (vim.vm.device.VirtualDisk.SparseVer2BackingInfo, "sparse"),
    (vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo, "rdm"),
)

log = logging.getLogger(__name__)


def find_vm(session: VCenterSession, instance_uuid: str) -> VmFacts:
    """The VM whose ``config.instanceUuid`` is ``instance_uuid`` (SearchIndex.FindByUuid).

    The instance UUID, unlike the moid, survives the VM being re-registered or the vCenter
    being rebuilt from a backup, which is why jobs name VMs by it.
    """
    index = session.content.searchIndex
    with session.guard(f"looking up the VM with instance UUID {instance_uuid}"):
        vm = index.FindByUuid(datacenter=None, uuid=instance_uuid, vmSearch=True, instanceUuid=True)
    if vm is None:
        raise VCenterError(
            VCenterErrorKind.NOT_FOUND,
            f"the vCenter at {session.address.display} has no VM with instance UUID {instance_uuid} "
            "(deleted, or moved to another vCenter?)",
        )
    return read_vm(session, VmHandle(str(vm._moId)))


def read_vm(session: VCenterSession, vm: VmHandle) -> VmFacts:
    """The current facts of ``vm``."""
    props = session.read(session.vm(vm), *FACT_PATHS)
    if "name" not in props:
        raise VCenterError(VCenterErrorKind.NOT_FOUND, f"VM {vm.moid} does not exist (any more)")
    datastore_refs = list(props.get("datastore") or ())
    names = session.read_many(datastore_refs, ["name"])
    datastores = tuple(
        DatastoreRef(str(ref._moId), str(names.get(ref._moId, {}).get("name", ref._moId)))
        for ref in datastore_refs
    )
    host_ref = props.get("runtime.host")
    host = None
    if host_ref is not None:
        host = HostRef(str(host_ref._moId), str(session.read(host_ref, "name").get("name", host_ref._moId)))
    return VmFacts(
        handle=vm,
        name=str(props["name"]),
        instance_uuid=str(props.get("config.instanceUuid") or ""),
        power_state=str(props.get("runtime.powerState", "unknown")),
        tools_running_status=str(props.get("guest.toolsRunningStatus") or ""),
        host=host,
        datastores=datastores,
        disks=disks_of(props.get("config.hardware.device") or (), datastores),
        cbt_enabled=bool(props.get("config.changeTrackingEnabled")),
        has_snapshots=props.get("snapshot.currentSnapshot") is not None,
        vmx_path=str(props.get("config.files.vmPathName") or ""),
    )


def disks_of(devices: Iterable[Any], datastores: Sequence[DatastoreRef] = ()) -> tuple[VmDisk, ...]:
    """The virtual disks among ``devices`` (pyVmomi objects) as plain data."""
    names = {ds.moid: ds.name for ds in datastores}
    return tuple(_disk(d, names) for d in devices if isinstance(d, vim.vm.device.VirtualDisk))


def _disk(device: Any, datastore_names: dict[str, str]) -> VmDisk:
    backing = device.backing
    kind = next((name for cls, name in _BACKINGS if isinstance(backing, cls)), "other")
    datastore = None
    ds_ref = getattr(backing, "datastore", None)
    if ds_ref is not None:
        moid = str(ds_ref._moId)
        datastore = DatastoreRef(moid, datastore_names.get(moid, _datastore_name_of(backing) or moid))
    info = device.deviceInfo
    return VmDisk(
        key=int(device.key),
        label=str(info.label) if info is not None and info.label else f"disk {device.key}",
        capacity_bytes=int(device.capacityInBytes or (device.capacityInKB or 0) * 1024),
        file_name=str(getattr(backing, "fileName", "") or ""),
        datastore=datastore,
        controller_key=_int_or_none(device.controllerKey),
        unit_number=_int_or_none(device.unitNumber),
        backing=kind,
        has_parent=getattr(backing, "parent", None) is not None,
        thin_provisioned=getattr(backing, "thinProvisioned", None),
        eagerly_scrub=getattr(backing, "eagerlyScrub", None),
        disk_mode=_str_or_none(getattr(backing, "diskMode", None)),
        change_id=_str_or_none(getattr(backing, "changeId", None)),
    )


def _datastore_name_of(backing: Any) -> str | None:
    file_name = str(getattr(backing, "fileName", "") or "")
    if file_name.startswith("[") and "]" in file_name:
        return file_name[1 : file_name.index("]")]
    return None


def _str_or_none(value: Any) -> str | None:
    return str(value) if value else None


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def snapshot_disks(session: VCenterSession, snapshot: SnapshotHandle) -> tuple[VmDisk, ...]:
    """The disks as recorded in the snapshot's configuration (their backings AS OF the snapshot)."""
    props = session.read(session.snapshot(snapshot), "config.hardware.device")
    if "config.hardware.device" not in props:
        raise VCenterError(
            VCenterErrorKind.NOT_FOUND,
            f"snapshot {snapshot.moid} of VM {snapshot.vm_moid} does not exist (any more)",
        )
    return disks_of(props["config.hardware.device"])


def snapshot_disk(session: VCenterSession, snapshot: SnapshotHandle, disk_key: int) -> VmDisk:
    for disk in snapshot_disks(session, snapshot):
        if disk.key == disk_key:
            return disk
    raise VCenterError(
        VCenterErrorKind.NOT_FOUND,
        f"snapshot {snapshot.moid} of VM {snapshot.vm_moid} has no disk with key {disk_key}",
    )


def disk_change_id(session: VCenterSession, snapshot: SnapshotHandle, disk_key: int) -> str | None:
    """The CBT change id of a disk as of ``snapshot``; ``None`` when the vCenter reports none.

    Store it with the restore point: the next incremental asks for the areas changed since
    it. vCenter sets it only on disks of VMs with CBT on (and after the stun cycle, see
    :func:`enable_cbt`); the simulator never does.
    """
    return snapshot_disk(session, snapshot, disk_key).change_id


def enable_cbt(session: VCenterSession, vm: VmHandle) -> bool:
    """Turn Changed Block Tracking on (ReconfigVM); ``True`` if it was off.

    On a real vCenter the setting only takes effect at the VM's next "stun/unstun" cycle: a
    power-on, or a snapshot create + delete. The first snapshot a backup takes after this
    call is such a cycle, but the disks of *that* snapshot have no usable change id yet;
    CBT is only trustworthy from the following backup on, so the caller should read the
    whole disk (or ask for ``"*"`` areas once a change id is reported).
    """
    obj = session.vm(vm)
    if session.read(obj, "config.changeTrackingEnabled").get("config.changeTrackingEnabled"):
        return False
    spec = _vm.ConfigSpec(changeTrackingEnabled=True)
    session.run_task(f"enabling CBT on VM {vm.moid}", obj.ReconfigVM_Task, spec=spec, timeout_s=600)
    return True


def datastore_space(session: VCenterSession, vm: VmHandle) -> list[DatastoreSpace]:
    """``(name, capacity, free)`` of each datastore the VM uses (one read of their summaries).

    Datastore names are unique within a datacenter, which a VM never leaves, so the name is
    enough to tell them apart. vCenter's free-space figures are refreshed periodically, so
    each datastore is asked to refresh first: the go/no-go decision of a backup must not rest
    on a figure from before the datastore filled up. A refresh that fails only logs.
    """
    refs = list(session.read(session.vm(vm), "datastore").get("datastore") or ())
    for ref in refs:
        try:
            with session.guard("refreshing datastore free space"):
                ref.RefreshDatastore()
        except Exception as exc:  # best effort: the figures vCenter has are still a reading
            log.info("could not refresh datastore %s: %s", ref._moId, exc)
    found = session.read_many(refs, ["summary.name", "summary.capacity", "summary.freeSpace"])
    spaces = [
        DatastoreSpace(
            name=str(props.get("summary.name", moid)),
            capacity_bytes=int(props.get("summary.capacity") or 0),
            free_bytes=int(props.get("summary.freeSpace") or 0),
        )
        for moid, props in found.items()
    ]
    return sorted(spaces)
