"""Capturing a VM's configuration: hardware, devices and the .vmx text, as JSON-able data."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pyVmomi import vim

from app.vadp.errors import VCenterError, VCenterErrorKind
from app.vadp.session import VCenterSession
from app.vadp.types import VmHandle
from app.vadp.vmconfig import capture_vm_config
from tests.support.vcsim import VcsimServer
from tests.vadp import reference
from tests.vadp.conftest import handle_of
from tests.vadp.disks import put_file
from tests.vadp.reference import find, props, wait_for_task

pytestmark = pytest.mark.vcsim

VM = "DC0_H0_VM0"
MAC = "00:50:56:01:02:03"
VMX = '.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "13"\ndisplayName = "DC0_H0_VM0 ü"\n'


def dress_up(server: VcsimServer, vm_name: str) -> None:
    """Give the VM more to capture: CPUs, memory, a note, a second disk, a second NIC, an ISO."""
    dev = vim.vm.device
    with reference.session(server) as si:
        vm = find(si, vim.VirtualMachine, vm_name)
        datastore = props(si, vm, "datastore")["datastore"][0]
        disk = dev.VirtualDisk(
            key=-1,
            controllerKey=202,
            unitNumber=1,
            capacityInKB=2048,
            backing=dev.VirtualDisk.FlatVer2BackingInfo(
                fileName="[LocalDS_0]", diskMode="persistent", thinProvisioned=False, datastore=datastore
            ),
        )
        nic = dev.VirtualVmxnet3(
            key=-2,
            addressType="manual",
            macAddress=MAC,
            backing=dev.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network"),
        )
        iso = dev.VirtualCdrom(
            key=-3,
            controllerKey=201,
            unitNumber=0,
            backing=dev.VirtualCdrom.IsoBackingInfo(fileName="[LocalDS_0] iso/tools.iso"),
        )
        spec = vim.vm.ConfigSpec(
            numCPUs=4,
            numCoresPerSocket=2,
            memoryMB=2048,
            annotation="database server\nowner: ops",
            deviceChange=[
                dev.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk),
                dev.VirtualDeviceSpec(operation="add", device=nic),
                dev.VirtualDeviceSpec(operation="add", device=iso),
            ],
        )
        wait_for_task(si, vm.ReconfigVM_Task(spec))
        vmx = props(si, vm, "config.files.vmPathName")["config.files.vmPathName"]
    put_file(server, "DC0", vmx, VMX.encode())


def expected_devices(si: Any, vm: Any) -> dict[str, Any]:
    devices = props(si, vm, "config.hardware.device")["config.hardware.device"]
    return {
        "disks": [
            (
                d.key,
                d.capacityInKB * 1024,
                d.controllerKey,
                d.unitNumber,
                d.backing.fileName,
                d.backing.thinProvisioned,
            )
            for d in devices
            if isinstance(d, vim.vm.device.VirtualDisk)
        ],
        "nics": [
            (d.key, type(d).__name__.rsplit(".", 1)[-1], d.macAddress, d.addressType)
            for d in devices
            if isinstance(d, vim.vm.device.VirtualEthernetCard)
        ],
        "controllers": sorted(
            d.key
            for d in devices
            if isinstance(d, vim.vm.device.VirtualController)
            and isinstance(d, (vim.vm.device.VirtualSCSIController, vim.vm.device.VirtualIDEController))
        ),
    }


def assert_plain(value: Any) -> None:
    assert type(value) in (dict, list, str, int, float, bool, type(None)), type(value)
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
        assert_plain(item)


def test_capture_contains_hardware_devices_and_the_vmx(sim: VcsimServer, sim_session: VCenterSession) -> None:
    dress_up(sim, VM)
    config = capture_vm_config(sim_session, handle_of(sim, VM))
    assert json.loads(json.dumps(config)) == config
    assert_plain(config)  # no pyVmomi str/int subclasses (enums, long) anywhere

    with reference.session(sim) as si:
        vm = find(si, vim.VirtualMachine, VM)
        p = props(si, vm, "config")["config"]
        expected = expected_devices(si, vm)
    assert config["format"] == 1
    assert (config["name"], config["instance_uuid"], config["bios_uuid"]) == (VM, p.instanceUuid, p.uuid)
    assert (config["guest_id"], config["hardware_version"], config["firmware"]) == (
        "otherGuest",
        "vmx-13",
        "bios",
    )
    assert (config["num_cpu"], config["num_cores_per_socket"], config["memory_mb"]) == (4, 2, 2048)
    assert config["annotation"] == "database server\nowner: ops"
    assert config["vmx_path"] == p.files.vmPathName
    assert config["vmx"] == VMX

    assert [
        (
            d["key"],
            d["capacity_bytes"],
            d["controller_key"],
            d["unit_number"],
            d["file_name"],
            d["thin_provisioned"],
        )
        for d in config["disks"]
    ] == expected["disks"]
    assert [d["capacity_bytes"] for d in config["disks"]] == [1 << 20, 2 << 20]
    assert {(d["controller_type"], d["bus_number"], d["datastore"]) for d in config["disks"]} == {
        ("ParaVirtualSCSIController", 0, "LocalDS_0")
    }
    assert [(n["key"], n["type"], n["mac_address"], n["address_type"]) for n in config["nics"]] == expected[
        "nics"
    ]
    networks = {n["type"]: (n["network"], n["network_kind"]) for n in config["nics"]}
    assert networks == {
        "VirtualE1000": ("DC0_DVPG0", "distributed"),
        "VirtualVmxnet3": ("VM Network", "standard"),
    }
    assert sorted(c["key"] for c in config["controllers"]) == expected["controllers"]
    iso = next(c for c in config["cdroms"] if c["backing"] == "iso")
    assert (iso["iso_file"], iso["controller_type"], iso["bus_number"], iso["unit_number"]) == (
        "[LocalDS_0] iso/tools.iso",
        "VirtualIDEController",
        1,
        0,
    )


def test_capture_without_the_vmx(sim: VcsimServer, sim_session: VCenterSession) -> None:
    config = capture_vm_config(sim_session, handle_of(sim, VM), include_vmx=False)
    assert config["vmx"] is None
    assert config["vmx_path"].endswith(".vmx")


def test_capture_of_a_missing_vm(sim_session: VCenterSession) -> None:
    with pytest.raises(VCenterError) as caught:
        capture_vm_config(sim_session, VmHandle("vm-31337"))
    assert caught.value.kind is VCenterErrorKind.NOT_FOUND
