"""Turning a captured VM configuration (plain dict) back into a vSphere ``VirtualMachineConfigSpec``.

Kept apart from :mod:`app.vadp.restore` because it is pure translation (no calls to the
vCenter except for looking up networks), which is easiest to read and to test on its own.
Device types come from the captured dict, so they are checked against explicit lists
instead of being looked up blindly in pyVmomi.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from app.vadp.session import VCenterSession
from app.vadp.types import DatastoreRef

_dev: Any = vim.vm.device  # pyVmomi's constructors are unannotated
_vm: Any = vim.vm
_dvs: Any = vim.dvs

# Built-in IDE controllers exist on every new VM, with these keys (ESXi and the simulator).
_IDE_KEY_BASE = 200

_CONTROLLERS: Mapping[str, tuple[Any, str]] = {
    "ParaVirtualSCSIController": (_dev.ParaVirtualSCSIController, "scsi"),
    "VirtualLsiLogicController": (_dev.VirtualLsiLogicController, "scsi"),
    "VirtualLsiLogicSASController": (_dev.VirtualLsiLogicSASController, "scsi"),
    "VirtualBusLogicController": (_dev.VirtualBusLogicController, "scsi"),
    "VirtualAHCIController": (_dev.VirtualAHCIController, "sata"),
    "VirtualNVMEController": (_dev.VirtualNVMEController, "nvme"),
}

_NICS: Mapping[str, Any] = {
    name: getattr(_dev, name)
    for name in (
        "VirtualE1000",
        "VirtualE1000e",
        "VirtualPCNet32",
        "VirtualVmxnet",
        "VirtualVmxnet2",
        "VirtualVmxnet3",
        "VirtualVmxnet3Vrdma",
    )
    if hasattr(_dev, name)
}


def controller_family(type_name: str | None) -> str | None:
    """``scsi``/``sata``/``nvme``/``ide`` for a controller type name."""
    if type_name is None:
        return None
    if type_name == "VirtualIDEController":
        return "ide"
    known = _CONTROLLERS.get(type_name)
    if known is not None:
        return known[1]
    return "scsi" if "SCSI" in type_name or "Logic" in type_name else None


@dataclass(frozen=True)
class TargetNetwork:
    """A network the target host sees: a standard/opaque network or a distributed port group."""

    name: str
    ref: Any
    portgroup_key: str | None = None
    switch_uuid: str | None = None


def target_networks(session: VCenterSession, refs: Iterable[Any]) -> dict[str, TargetNetwork]:
    """The networks in ``refs`` (a host's ``network``) by name."""
    refs = list(refs)
    portgroups = [r for r in refs if isinstance(r, vim.dvs.DistributedVirtualPortgroup)]
    others = [r for r in refs if not isinstance(r, vim.dvs.DistributedVirtualPortgroup)]
    result: dict[str, TargetNetwork] = {}
    for ref in others:
        name = session.read(ref, "name").get("name")
        if name is not None:
            result[str(name)] = TargetNetwork(str(name), ref)
    found = session.read_many(portgroups, ["name", "key", "config.distributedVirtualSwitch"])
    switches = {
        str(p["config.distributedVirtualSwitch"]._moId): p["config.distributedVirtualSwitch"]
        for p in found.values()
        if p.get("config.distributedVirtualSwitch") is not None
    }
    uuids = {
        moid: props.get("uuid")
        for moid, props in session.read_many(list(switches.values()), ["uuid"]).items()
    }
    for ref in portgroups:
        props = found.get(ref._moId, {})
        switch = props.get("config.distributedVirtualSwitch")
        if "name" in props and switch is not None:
            result[str(props["name"])] = TargetNetwork(
                str(props["name"]), ref, str(props.get("key") or ref._moId), uuids.get(switch._moId)
            )
    return result


def build_config_spec(
    config: Mapping[str, Any],
    name: str,
    datastore: DatastoreRef,
    datastore_obj: Any,
    networks: Mapping[str, TargetNetwork],
    *,
    keep_mac: bool,
    network_map: Mapping[str, str],
) -> tuple[Any, list[str]]:
    """The CreateVM spec for ``config`` and the warnings about what it leaves out."""
    warnings: list[str] = []
    changes: list[Any] = []
    controller_keys: dict[int, int] = {}
    for index, controller in enumerate(config.get("controllers") or ()):
        if controller["type"] == "VirtualIDEController":
            controller_keys[controller["key"]] = _IDE_KEY_BASE + int(controller["bus_number"])
            continue
        known = _CONTROLLERS.get(controller["type"])
        if known is None:
            warnings.append(
                f"controller {controller['label']} of type {controller['type']} was not recreated"
            )
            continue
        key = -100 - index
        controller_keys[controller["key"]] = key
        device = known[0](key=key, busNumber=int(controller["bus_number"]))
        if known[1] == "scsi":
            device.sharedBus = controller.get("shared_bus") or "noSharing"
        changes.append(_add(device))
    for index, disk in enumerate(config.get("disks") or ()):
        changes.append(_disk_change(disk, -2000 - index, controller_keys, datastore, datastore_obj))
    for index, nic in enumerate(config.get("nics") or ()):
        change = _nic_change(nic, -3000 - index, networks, keep_mac, network_map, warnings)
        if change is not None:
            changes.append(change)
    for index, cdrom in enumerate(config.get("cdroms") or ()):
        change = _cdrom_change(cdrom, -4000 - index, controller_keys, warnings)
        if change is not None:
            changes.append(change)
    spec = _vm.ConfigSpec(
        name=name,
        guestId=config.get("guest_id") or "otherGuest",
        numCPUs=int(config.get("num_cpu") or 1),
        numCoresPerSocket=int(config.get("num_cores_per_socket") or 1),
        memoryMB=int(config.get("memory_mb") or 1024),
        annotation=config.get("annotation") or None,
        firmware=config.get("firmware") or None,
        version=config.get("hardware_version") or None,
        changeTrackingEnabled=bool(config.get("cbt_enabled")),
        files=_vm.FileInfo(vmPathName=f"[{datastore.name}]"),
        deviceChange=changes,
    )
    return spec, warnings


def _add(device: Any, create_file: bool = False) -> Any:
    change = _dev.VirtualDeviceSpec(operation=_dev.VirtualDeviceSpec.Operation.add, device=device)
    if create_file:
        change.fileOperation = _dev.VirtualDeviceSpec.FileOperation.create
    return change


def _disk_change(
    disk: Mapping[str, Any],
    key: int,
    controller_keys: Mapping[int, int],
    datastore: DatastoreRef,
    datastore_obj: Any,
) -> Any:
    controller = controller_keys.get(disk.get("controller_key") or 0)
    if controller is None:
        raise ValueError(
            f"disk {disk['label']} sits on controller {disk.get('controller_key')}, "
            "which could not be recreated"
        )
    kib = -(-int(disk["capacity_bytes"]) // 1024)
    backing = _dev.VirtualDisk.FlatVer2BackingInfo(
        fileName=f"[{datastore.name}]",
        datastore=datastore_obj,
        diskMode=disk.get("disk_mode") or "persistent",
        thinProvisioned=bool(disk.get("thin_provisioned")),
        eagerlyScrub=bool(disk.get("eagerly_scrub")),
    )
    device = _dev.VirtualDisk(
        key=key,
        controllerKey=controller,
        unitNumber=int(disk["unit_number"] or 0),
        capacityInKB=kib,
        capacityInBytes=kib * 1024,
        backing=backing,
    )
    return _add(device, create_file=True)


def _nic_change(
    nic: Mapping[str, Any],
    key: int,
    networks: Mapping[str, TargetNetwork],
    keep_mac: bool,
    network_map: Mapping[str, str],
    warnings: list[str],
) -> Any | None:
    cls = _NICS.get(nic["type"])
    wanted = network_map.get(nic.get("network") or "", nic.get("network"))
    target = networks.get(wanted or "")
    if cls is None or target is None:
        reason = (
            f"type {nic['type']} is not supported" if cls is None else f"the host sees no network {wanted!r}"
        )
        warnings.append(f"{nic['label']} was left out: {reason}")
        return None
    if target.portgroup_key is not None:
        port = _dvs.PortConnection(portgroupKey=target.portgroup_key, switchUuid=target.switch_uuid)
        backing = _dev.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
    else:
        backing = _dev.VirtualEthernetCard.NetworkBackingInfo(deviceName=target.name, network=target.ref)
    device = cls(
        key=key,
        backing=backing,
        connectable=_dev.VirtualDevice.ConnectInfo(
            startConnected=nic.get("start_connected") is not False, allowGuestControl=True, connected=False
        ),
    )
    if keep_mac and nic.get("mac_address"):
        device.addressType = "manual"
        device.macAddress = nic["mac_address"]
    else:
        device.addressType = "generated"
    return _add(device)


def _cdrom_change(
    cdrom: Mapping[str, Any], key: int, controller_keys: Mapping[int, int], warnings: list[str]
) -> Any | None:
    controller = controller_keys.get(cdrom.get("controller_key") or 0)
    if controller is None:
        warnings.append(f"{cdrom['label']} was left out: its controller was not recreated")
        return None
    if cdrom.get("backing") == "iso":
        warnings.append(f"{cdrom['label']} had {cdrom.get('iso_file')} mounted; it was recreated empty")
    backing = _dev.VirtualCdrom.RemotePassthroughBackingInfo(
        deviceName="", exclusive=False, useAutoDetect=False
    )
    device = _dev.VirtualCdrom(
        key=key,
        controllerKey=controller,
        unitNumber=int(cdrom.get("unit_number") or 0),
        backing=backing,
        connectable=_dev.VirtualDevice.ConnectInfo(
            startConnected=False, allowGuestControl=True, connected=False
        ),
    )
    return _add(device)


def match_disks(captured: Sequence[Mapping[str, Any]], devices: Sequence[Any]) -> dict[int, int]:
    """Map captured disk keys to the new VM's disk keys by (controller family, bus, unit)."""
    controllers = {int(d.key): d for d in devices if isinstance(d, _dev.VirtualController)}
    placed: dict[tuple[str | None, int | None, int | None], int] = {}
    for device in devices:
        if not isinstance(device, _dev.VirtualDisk):
            continue
        controller = controllers.get(int(device.controllerKey)) if device.controllerKey is not None else None
        family = controller_family(type(controller).__name__.rsplit(".", 1)[-1]) if controller else None
        bus = int(controller.busNumber) if controller is not None else None
        unit = int(device.unitNumber) if device.unitNumber is not None else None
        placed[(family, bus, unit)] = int(device.key)
    mapping: dict[int, int] = {}
    for disk in captured:
        family = controller_family(disk.get("controller_type"))
        place = (family, disk.get("bus_number"), disk.get("unit_number"))
        if place in placed:
            mapping[int(disk["key"])] = placed.pop(place)
    return mapping
