"""The restore writer: recreate a VM from its captured configuration, or overwrite the original
VM's disks, and stream disk images into the disks' flat files.

Writes go through the datastore HTTP service (``PUT /folder/<disk>-flat.vmdk``) in one
streamed request per disk: the bytes come from the repository in order and are never held
in memory. That requires the target disk to be a flat base disk (no snapshots on the VM)
and the VM to be powered off, which :func:`prepare_original_vm_for_restore` and
:func:`upload_disk` check. The flat file always ends up exactly as large as the disk's
capacity: a larger image first grows the disk (ReconfigVM), a smaller one is followed by
zeros.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pyVmomi import vim

from app.vadp.datastore_http import flat_file, put_file
from app.vadp.errors import VCenterError, VCenterErrorKind
from app.vadp.restore_spec import build_config_spec, match_disks, target_networks
from app.vadp.session import DEFAULT_TASK_TIMEOUT_S, VCenterSession
from app.vadp.types import CreatedVm, VmFacts, VmHandle
from app.vadp.vms import read_vm

log = logging.getLogger(__name__)

_vm: Any = vim.vm  # pyVmomi's data-object constructors are unannotated
_ZEROS = bytes(1 << 20)
_MAX_PARENT_DEPTH = 64


def create_vm_from_config(
    session: VCenterSession,
    config: Mapping[str, Any],
    name: str,
    host: str,
    datastore: str,
    folder: str | None = None,
    *,
    keep_mac: bool = False,
    network_map: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TASK_TIMEOUT_S,
) -> CreatedVm:
    """Create a powered-off VM named ``name`` from a :func:`capture_vm_config` dict.

    ``host``, ``datastore`` and ``folder`` are moids; the folder defaults to the VM folder
    of the host's datacenter, the resource pool is the host's cluster (or standalone host)
    root pool. Disks are created empty at their captured capacities on ``datastore``;
    write their contents with :func:`upload_disk` using ``CreatedVm.disk_keys``. NICs are
    attached to the network of the same name (or ``network_map[name]``) seen by the host,
    with new MAC addresses unless ``keep_mac`` (a restored copy running next to the original
    must not share its MACs); a NIC whose network the host does not see is left out and
    reported in ``warnings``, as is an ISO that was mounted.
    """
    host_ref = session.managed(vim.HostSystem, host)
    host_props = session.read(host_ref, "parent", "datastore", "network")
    if "parent" not in host_props:
        raise VCenterError(VCenterErrorKind.NOT_FOUND, f"host {host} does not exist")
    if datastore not in {str(ref._moId) for ref in host_props.get("datastore") or ()}:
        raise VCenterError(VCenterErrorKind.NOT_FOUND, f"datastore {datastore} is not mounted on host {host}")
    pool = session.read(host_props["parent"], "resourcePool").get("resourcePool")
    if pool is None:
        raise VCenterError(VCenterErrorKind.NOT_FOUND, f"host {host} has no resource pool")
    folder_ref = (
        session.managed(vim.Folder, folder) if folder is not None else _vm_folder_of(session, host_ref)
    )
    target = session.datastore(datastore)
    networks = target_networks(session, host_props.get("network") or ())
    spec, warnings = build_config_spec(
        config,
        name,
        target,
        session.managed(vim.Datastore, datastore),
        networks,
        keep_mac=keep_mac,
        network_map=network_map or {},
    )
    result = session.run_task(
        f"creating VM {name!r} on host {host}",
        folder_ref.CreateVM_Task,
        config=spec,
        pool=pool,
        host=host_ref,
        timeout_s=timeout_s,
    )
    if result is None:
        raise VCenterError(VCenterErrorKind.TASK_FAILED, f"creating VM {name!r} returned no VM")
    handle = VmHandle(str(result._moId))
    devices = session.read(result, "config.hardware.device").get("config.hardware.device") or ()
    disk_keys = match_disks(config.get("disks") or (), list(devices))
    missing = [d["key"] for d in config.get("disks") or () if d["key"] not in disk_keys]
    if missing:
        raise VCenterError(
            VCenterErrorKind.TASK_FAILED,
            f"VM {name!r} was created without disks for captured keys {missing}",
        )
    for warning in warnings:
        log.warning("VM %s (%s): %s", name, handle.moid, warning)
    return CreatedVm(handle, name, disk_keys, tuple(warnings))


def _vm_folder_of(session: VCenterSession, host_ref: Any) -> Any:
    current = session.read(host_ref, "parent").get("parent")
    for _ in range(_MAX_PARENT_DEPTH):
        if current is None:
            break
        if isinstance(current, vim.Datacenter):
            return session.read(current, "vmFolder")["vmFolder"]
        current = session.read(current, "parent").get("parent")
    raise VCenterError(VCenterErrorKind.NOT_FOUND, f"host {host_ref._moId} is not inside a datacenter")


def prepare_original_vm_for_restore(session: VCenterSession, vm: VmHandle, force: bool) -> VmFacts:
    """Make the original VM ready to have its disks overwritten; return its facts.

    Refuses (``invalid_state``) a VM that is not powered off unless ``force``, in which case
    it is powered off hard (no guest shutdown: its disks are about to be replaced anyway),
    and a VM with snapshots: writing a base disk under a snapshot chain corrupts every
    snapshot, so they must be removed (consolidated) first, deliberately.
    """
    facts = read_vm(session, vm)
    if facts.has_snapshots:
        raise VCenterError(
            VCenterErrorKind.INVALID_STATE,
            f"VM {facts.name!r} has snapshots; remove them before restoring over its disks",
        )
    if facts.power_state != "poweredOff":
        if not force:
            raise VCenterError(
                VCenterErrorKind.INVALID_STATE,
                f"VM {facts.name!r} is {facts.power_state}; power it off or restore with force "
                "(which powers it off without shutting the guest down)",
            )
        obj = session.vm(vm)
        session.run_task(f"powering off VM {facts.name!r}", obj.PowerOffVM_Task, timeout_s=600)
        facts = read_vm(session, vm)
    return facts


def extend_disk(
    session: VCenterSession, vm: VmHandle, disk_key: int, capacity_bytes: int, *, timeout_s: float = 600
) -> int:
    """Grow a disk to at least ``capacity_bytes`` (whole KiB); return the new capacity."""
    obj = session.vm(vm)
    devices = session.read(obj, "config.hardware.device").get("config.hardware.device") or ()
    device: Any = next(
        (d for d in devices if isinstance(d, vim.vm.device.VirtualDisk) and int(d.key) == disk_key), None
    )
    if device is None:
        raise VCenterError(VCenterErrorKind.NOT_FOUND, f"VM {vm.moid} has no disk with key {disk_key}")
    current = int(device.capacityInBytes or (device.capacityInKB or 0) * 1024)
    if current >= capacity_bytes:
        return current
    kib = -(-capacity_bytes // 1024)
    device.capacityInKB = kib
    device.capacityInBytes = kib * 1024
    change = _vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.edit, device=device
    )
    session.run_task(
        f"growing disk {disk_key} of VM {vm.moid} to {kib * 1024} bytes",
        obj.ReconfigVM_Task,
        spec=_vm.ConfigSpec(deviceChange=[change]),
        timeout_s=timeout_s,
    )
    return kib * 1024


def upload_disk(
    session: VCenterSession, vm: VmHandle, disk_key: int, chunks: Iterable[bytes], size: int
) -> int:
    """Write ``size`` bytes (from ``chunks``, in order) as the contents of a powered-off VM's disk.

    The disk is grown first if ``size`` exceeds its capacity; if the image is smaller, the
    rest of the disk is zeroed. Returns the bytes written to the flat file (its capacity).
    """
    facts = read_vm(session, vm)
    if facts.power_state != "poweredOff":
        raise VCenterError(
            VCenterErrorKind.INVALID_STATE,
            f"VM {facts.name!r} is {facts.power_state}; disks are only written to powered-off VMs",
        )
    try:
        disk = facts.disk(disk_key)
    except KeyError as exc:
        raise VCenterError(VCenterErrorKind.NOT_FOUND, str(exc.args[0])) from None
    target = flat_file(disk)
    capacity = disk.capacity_bytes
    if size > capacity:
        capacity = extend_disk(session, vm, disk_key, size)
    log.info("writing %d bytes (+%d zero bytes) to %s", size, capacity - size, target.display)
    return put_file(session, target, _padded(chunks, capacity - size), capacity)


def _padded(chunks: Iterable[bytes], zeros: int) -> Iterator[bytes]:
    yield from chunks
    while zeros > 0:
        piece = min(zeros, len(_ZEROS))
        yield _ZEROS[:piece]
        zeros -= piece


__all__ = [
    "create_vm_from_config",
    "extend_disk",
    "prepare_original_vm_for_restore",
    "upload_disk",
]


def power_on_vm(session: VCenterSession, vm: VmHandle, timeout_s: float = 600) -> None:
    """Power a restored VM on (when the restore request asked for it)."""
    obj = session.vm(vm)
    session.run_task(f"powering on VM {vm.moid}", obj.PowerOnVM_Task, timeout_s=timeout_s)


def destroy_vm(session: VCenterSession, vm: VmHandle, timeout_s: float = 600) -> None:
    """Remove a VM and its files: a restore that failed half-way must not leave a VM behind
    that looks like a good copy."""
    facts = read_vm(session, vm)
    obj = session.vm(vm)
    if facts.power_state != "poweredOff":
        session.run_task(f"powering off VM {facts.name!r}", obj.PowerOffVM_Task, timeout_s=timeout_s)
    session.run_task(f"deleting VM {facts.name!r}", obj.Destroy_Task, timeout_s=timeout_s)
