"""Capturing a VM's configuration with a backup, as JSON-serializable data.

The captured dict is what a restore to a *new* VM is built from (see
:mod:`app.vadp.restore`), and what an operator reads when a VM has to be rebuilt by hand:
hardware (CPU, memory, firmware, hardware version), controllers, disks with their place on
the controllers, NICs with their networks and MACs, CD-ROMs, the annotation, and the
``.vmx`` file itself as text. Device types are stored by their vSphere API names
(``VirtualVmxnet3``, ``ParaVirtualSCSIController``...), so nothing pyVmomi-specific leaks.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from app.vadp.datastore_http import DatastoreFile, get_file
from app.vadp.errors import VCenterError, VCenterErrorKind
from app.vadp.session import VCenterSession, parse_datastore_path
from app.vadp.types import VmHandle

CONFIG_FORMAT = 1
MAX_VMX_BYTES = 4 << 20

_CONFIG_PATHS = (
    "name",
    "config.instanceUuid",
    "config.uuid",
    "config.guestId",
    "config.guestFullName",
    "config.version",
    "config.firmware",
    "config.annotation",
    "config.changeTrackingEnabled",
    "config.files.vmPathName",
    "config.hardware.numCPU",
    "config.hardware.numCoresPerSocket",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "datastore",
    "network",
)

_CONTROLLER_TYPES = (
    vim.vm.device.VirtualSCSIController,
    vim.vm.device.VirtualSATAController,
    vim.vm.device.VirtualNVMEController,
    vim.vm.device.VirtualIDEController,
)
_CLIENT_CDROM = (
    vim.vm.device.VirtualCdrom.RemotePassthroughBackingInfo,
    vim.vm.device.VirtualCdrom.RemoteAtapiBackingInfo,
)
_HOST_CDROM = (vim.vm.device.VirtualCdrom.AtapiBackingInfo, vim.vm.device.VirtualCdrom.PassthroughBackingInfo)


def type_name(device: Any) -> str:
    """``VirtualVmxnet3`` for a ``vim.vm.device.VirtualVmxnet3``: the API's own type name."""
    return type(device).__name__.rsplit(".", 1)[-1]


def capture_vm_config(session: VCenterSession, vm: VmHandle, *, include_vmx: bool = True) -> dict[str, Any]:
    """The configuration of ``vm`` as a JSON-serializable dict (see the module docstring)."""
    props = session.read(session.vm(vm), *_CONFIG_PATHS)
    if "name" not in props:
        raise VCenterError(VCenterErrorKind.NOT_FOUND, f"VM {vm.moid} does not exist (any more)")
    datastores = {
        moid: str(p.get("name", moid))
        for moid, p in session.read_many(list(props.get("datastore") or ()), ["name"]).items()
    }
    devices = list(props.get("config.hardware.device") or ())
    portgroups = _portgroup_names(session, props.get("network") or ())
    by_key = {int(d.key): d for d in devices}
    vmx_path = str(props.get("config.files.vmPathName") or "")
    config: dict[str, Any] = plain(
        {
            "format": CONFIG_FORMAT,
            "moid": vm.moid,
            "name": str(props["name"]),
            "instance_uuid": props.get("config.instanceUuid"),
            "bios_uuid": props.get("config.uuid"),
            "guest_id": props.get("config.guestId"),
            "guest_full_name": props.get("config.guestFullName"),
            "hardware_version": props.get("config.version"),
            "firmware": props.get("config.firmware"),
            "num_cpu": _int(props.get("config.hardware.numCPU")),
            "num_cores_per_socket": _int(props.get("config.hardware.numCoresPerSocket")),
            "memory_mb": _int(props.get("config.hardware.memoryMB")),
            "annotation": props.get("config.annotation") or "",
            "cbt_enabled": bool(props.get("config.changeTrackingEnabled")),
            "vmx_path": vmx_path,
            "vmx": _vmx_text(session, vmx_path, datastores) if include_vmx else None,
            "controllers": [_controller(d) for d in devices if isinstance(d, _CONTROLLER_TYPES)],
            "disks": [
                _disk(d, by_key, datastores) for d in devices if isinstance(d, vim.vm.device.VirtualDisk)
            ],
            "nics": [
                _nic(d, portgroups) for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)
            ],
            "cdroms": [_cdrom(d, by_key) for d in devices if isinstance(d, vim.vm.device.VirtualCdrom)],
        }
    )
    return config


def plain(value: Any) -> Any:
    """``value`` with pyVmomi's str/int subclasses (enums, ``long``) turned into plain JSON types."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    raise TypeError(f"{type(value).__name__} is not plain JSON data")


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _label(device: Any) -> str:
    info = device.deviceInfo
    return str(info.label) if info is not None and info.label else f"device {device.key}"


def _controller(device: Any) -> dict[str, Any]:
    return {
        "key": int(device.key),
        "type": type_name(device),
        "label": _label(device),
        "bus_number": int(device.busNumber),
        "shared_bus": str(getattr(device, "sharedBus", "") or "") or None,
    }


def _disk(device: Any, by_key: dict[int, Any], datastores: dict[str, str]) -> dict[str, Any]:
    backing = device.backing
    controller = by_key.get(int(device.controllerKey)) if device.controllerKey is not None else None
    ds_ref = getattr(backing, "datastore", None)
    ds_moid = str(ds_ref._moId) if ds_ref is not None else None
    file_name = str(getattr(backing, "fileName", "") or "")
    datastore = datastores.get(ds_moid or "") or (parse_datastore_path(file_name)[0] if file_name else None)
    return {
        "key": int(device.key),
        "label": _label(device),
        "capacity_bytes": int(device.capacityInBytes or (device.capacityInKB or 0) * 1024),
        "controller_key": _int(device.controllerKey),
        "controller_type": type_name(controller) if controller is not None else None,
        "bus_number": int(controller.busNumber) if controller is not None else None,
        "unit_number": _int(device.unitNumber),
        "file_name": file_name,
        "datastore": datastore,
        "datastore_moid": ds_moid,
        "backing": type_name(backing),
        "thin_provisioned": getattr(backing, "thinProvisioned", None),
        "eagerly_scrub": getattr(backing, "eagerlyScrub", None),
        "disk_mode": getattr(backing, "diskMode", None),
        "sharing": getattr(backing, "sharing", None),
    }


def _portgroup_names(session: VCenterSession, networks: Any) -> dict[str, str]:
    """Names of the VM's distributed port groups by their key (a DVS NIC only knows the key)."""
    portgroups = [n for n in networks if isinstance(n, vim.dvs.DistributedVirtualPortgroup)]
    found = session.read_many(portgroups, ["name", "key"])
    return {str(p["key"]): str(p["name"]) for p in found.values() if "key" in p and "name" in p}


def _nic(device: Any, portgroups: dict[str, str]) -> dict[str, Any]:
    backing = device.backing
    network: str | None = None
    kind = "other"
    portgroup_key = switch_uuid = None
    if isinstance(backing, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo):
        kind, network = "standard", backing.deviceName
    elif isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
        kind = "distributed"
        portgroup_key, switch_uuid = backing.port.portgroupKey, backing.port.switchUuid
        network = portgroups.get(str(portgroup_key))
    elif isinstance(backing, vim.vm.device.VirtualEthernetCard.OpaqueNetworkBackingInfo):
        kind, network = "opaque", backing.opaqueNetworkId
    connectable = device.connectable
    return {
        "key": int(device.key),
        "label": _label(device),
        "type": type_name(device),
        "network": network,
        "network_kind": kind,
        "portgroup_key": portgroup_key,
        "switch_uuid": switch_uuid,
        "mac_address": device.macAddress,
        "address_type": device.addressType,
        "wake_on_lan": getattr(device, "wakeOnLanEnabled", None),
        "start_connected": bool(connectable.startConnected) if connectable is not None else None,
        "controller_key": _int(device.controllerKey),
        "unit_number": _int(device.unitNumber),
    }


def _cdrom(device: Any, by_key: dict[int, Any]) -> dict[str, Any]:
    backing = device.backing
    if isinstance(backing, vim.vm.device.VirtualCdrom.IsoBackingInfo):
        kind, iso = "iso", backing.fileName
    elif isinstance(backing, _CLIENT_CDROM):
        kind, iso = "client", None
    elif isinstance(backing, _HOST_CDROM):
        kind, iso = "host", None
    else:
        kind, iso = "none" if backing is None else "other", None
    controller = by_key.get(int(device.controllerKey)) if device.controllerKey is not None else None
    connectable = device.connectable
    return {
        "key": int(device.key),
        "label": _label(device),
        "controller_key": _int(device.controllerKey),
        "controller_type": type_name(controller) if controller is not None else None,
        "bus_number": int(controller.busNumber) if controller is not None else None,
        "unit_number": _int(device.unitNumber),
        "backing": kind,
        "iso_file": iso,
        "start_connected": bool(connectable.startConnected) if connectable is not None else None,
    }


def _vmx_text(session: VCenterSession, vmx_path: str, datastores: dict[str, str]) -> str:
    """The ``.vmx`` file's text (downloaded through ``/folder``)."""
    if not vmx_path:
        raise VCenterError(VCenterErrorKind.NOT_FOUND, "the VM reports no .vmx path")
    name, path = parse_datastore_path(vmx_path)
    moid = next((m for m, n in datastores.items() if n == name), None)
    if moid is None:
        raise VCenterError(
            VCenterErrorKind.NOT_FOUND,
            f"the datastore {name!r} of {vmx_path} is not among the VM's datastores",
        )
    data = get_file(session, DatastoreFile(moid, name, path), MAX_VMX_BYTES)
    return data.decode("utf-8", errors="replace")
