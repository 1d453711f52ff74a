"""The restore writer: a new VM from a captured config, disk uploads, and restores over the original.

Simulator facts these tests rely on (govmomi simulator/virtual_machine.go and
virtual_disk_manager.go, checked here): CreateVM makes ``<name>/<name>.vmdk`` and an EMPTY
``<name>/<name>-flat.vmdk`` for each new disk whatever its capacity; ReconfigVM changes a
disk's capacity without touching the flat file; a PUT to ``/folder`` replaces the file with
the request body. So the uploaded bytes are the whole truth of the disk, and the upload
always writes the full capacity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from pyVmomi import vim

from app.vadp import restore, snapshots, vms
from app.vadp.errors import DiskIOError, VCenterError, VCenterErrorKind
from app.vadp.session import VCenterSession
from app.vadp.types import CreatedVm, VmHandle
from app.vadp.vmconfig import capture_vm_config
from tests.support.vcsim import VcsimServer
from tests.vadp import reference
from tests.vadp.conftest import handle_of
from tests.vadp.disks import MIB, DiskContent, fill_disk, generated_content, read_back
from tests.vadp.reference import find, props, wait_for_task
from tests.vadp.test_vm_config import MAC, dress_up

pytestmark = pytest.mark.vcsim

VM = "DC0_H0_VM0"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunks(data: bytes, size: int = MIB) -> Iterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


def moid_of(server: VcsimServer, kind: Any, name: str) -> str:
    with reference.session(server) as si:
        return str(find(si, kind, name)._moId)


def datastore_of(server: VcsimServer, vm_name: str) -> str:
    with reference.session(server) as si:
        return str(props(si, find(si, vim.VirtualMachine, vm_name), "datastore")["datastore"][0]._moId)


def disk_state(server: VcsimServer, vm: VmHandle) -> list[tuple[int, int, str]]:
    """(key, capacity, sha256 of the flat file) of each disk, read independently."""
    with reference.session(server) as si:
        obj = vim.VirtualMachine(vm.moid, si._stub)
        devices = props(si, obj, "config.hardware.device")["config.hardware.device"]
        return [
            (d.key, d.capacityInKB * 1024, sha(read_back(server, "DC0", d.backing.fileName)))
            for d in devices
            if isinstance(d, vim.vm.device.VirtualDisk)
        ]


@pytest.fixture
def source(sim: VcsimServer) -> list[DiskContent]:
    """A dressed-up, powered-off VM with real content on both of its disks."""
    dress_up(sim, VM)
    with reference.session(sim) as si:
        devices = props(si, find(si, vim.VirtualMachine, VM), "config.hardware.device")[
            "config.hardware.device"
        ]
        keys = [d.key for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
    contents = [
        fill_disk(sim, VM, 8 * MIB, seed=21, key=keys[0]),
        fill_disk(sim, VM, 3 * MIB, seed=22, kind="random", key=keys[1]),
    ]
    with reference.session(sim) as si:
        wait_for_task(si, find(si, vim.VirtualMachine, VM).PowerOffVM_Task())
    return contents


def restore_new(
    sim: VcsimServer, session: VCenterSession, config: dict[str, Any], name: str, **kwargs: Any
) -> CreatedVm:
    host = moid_of(sim, vim.HostSystem, "DC0_C0_H1")
    return restore.create_vm_from_config(session, config, name, host, datastore_of(sim, VM), **kwargs)


def test_new_vm_from_config_gets_the_hardware_and_the_exact_disk_bytes(
    sim: VcsimServer, sim_session: VCenterSession, source: list[DiskContent]
) -> None:
    contents = source
    config = capture_vm_config(sim_session, handle_of(sim, VM))
    created = restore_new(sim, sim_session, config, "restored-1")

    (warning,) = created.warnings
    assert warning.endswith("had [LocalDS_0] iso/tools.iso mounted; it was recreated empty")
    facts = vms.read_vm(sim_session, created.handle)
    assert (facts.name, facts.power_state, facts.host and facts.host.name) == (
        "restored-1",
        "poweredOff",
        "DC0_C0_H1",
    )
    assert sorted(created.disk_keys) == sorted(c.disk_key for c in contents)
    assert [facts.disk(created.disk_keys[c.disk_key]).capacity_bytes for c in contents] == [8 * MIB, 3 * MIB]

    # The simulator creates new disks with an empty flat file, whatever their capacity.
    assert {sha for _, _, sha in disk_state(sim, created.handle)} == {sha(b"")}
    for content in contents:
        written = restore.upload_disk(
            sim_session,
            created.handle,
            created.disk_keys[content.disk_key],
            chunks(content.data),
            len(content.data),
        )
        assert written == len(content.data)
    state = disk_state(sim, created.handle)
    assert sorted(state) == sorted((created.disk_keys[c.disk_key], len(c.data), c.sha256) for c in contents)

    again = capture_vm_config(sim_session, created.handle, include_vmx=False)
    for field in (
        "guest_id",
        "num_cpu",
        "num_cores_per_socket",
        "memory_mb",
        "firmware",
        "hardware_version",
        "annotation",
    ):
        assert again[field] == config[field], field
    assert sorted((n["type"], n["network"]) for n in again["nics"]) == sorted(
        (n["type"], n["network"]) for n in config["nics"]
    )
    assert MAC not in {n["mac_address"] for n in again["nics"]}  # a copy gets its own MACs
    assert again["instance_uuid"] != config["instance_uuid"]
    assert [(d["controller_type"], d["unit_number"]) for d in again["disks"]] == [
        (d["controller_type"], d["unit_number"]) for d in config["disks"]
    ]


def test_new_vm_keeps_macs_when_asked_and_maps_or_drops_networks(
    sim: VcsimServer, sim_session: VCenterSession
) -> None:
    dress_up(sim, VM)
    config = capture_vm_config(sim_session, handle_of(sim, VM), include_vmx=False)
    kept = restore_new(sim, sim_session, config, "same-macs", keep_mac=True)
    macs = {n["mac_address"] for n in capture_vm_config(sim_session, kept.handle, include_vmx=False)["nics"]}
    assert MAC in macs

    moved = restore_new(sim, sim_session, config, "moved", network_map={"VM Network": "DC0_DVPG0"})
    nets = [n["network"] for n in capture_vm_config(sim_session, moved.handle, include_vmx=False)["nics"]]
    assert nets == ["DC0_DVPG0", "DC0_DVPG0"]

    config["nics"][1]["network"] = "no-such-network"
    dropped = restore_new(sim, sim_session, config, "dropped")
    assert any("no-such-network" in w for w in dropped.warnings)
    assert len(capture_vm_config(sim_session, dropped.handle, include_vmx=False)["nics"]) == 1


def test_creating_on_a_datastore_the_host_lacks_is_refused(
    sim: VcsimServer, sim_session: VCenterSession
) -> None:
    config = capture_vm_config(sim_session, handle_of(sim, VM), include_vmx=False)
    host = moid_of(sim, vim.HostSystem, "DC0_H0")
    with pytest.raises(VCenterError) as caught:
        restore.create_vm_from_config(sim_session, config, "nowhere", host, "datastore-404")
    assert caught.value.kind is VCenterErrorKind.NOT_FOUND


def test_restore_over_a_powered_on_original_is_refused_without_force(
    sim: VcsimServer, sim_session: VCenterSession
) -> None:
    vm = handle_of(sim, VM)
    with pytest.raises(VCenterError) as caught:
        restore.prepare_original_vm_for_restore(sim_session, vm, force=False)
    assert caught.value.kind is VCenterErrorKind.INVALID_STATE
    assert "poweredOn" in caught.value.message
    assert vms.read_vm(sim_session, vm).power_state == "poweredOn"  # untouched
    with pytest.raises(VCenterError, match="powered-off"):
        restore.upload_disk(sim_session, vm, vms.read_vm(sim_session, vm).disks[0].key, [b"x" * 1024], 1024)

    facts = restore.prepare_original_vm_for_restore(sim_session, vm, force=True)
    assert facts.power_state == "poweredOff"
    assert restore.prepare_original_vm_for_restore(sim_session, vm, force=False).power_state == "poweredOff"


def test_restore_over_a_vm_with_snapshots_is_refused(sim: VcsimServer, sim_session: VCenterSession) -> None:
    vm = handle_of(sim, VM)
    snapshots.create_snapshot(sim_session, vm, "before-upgrade")
    with pytest.raises(VCenterError, match="has snapshots"):
        restore.prepare_original_vm_for_restore(sim_session, vm, force=True)
    assert vms.read_vm(sim_session, vm).power_state == "poweredOn"  # refused before powering off


def test_original_vm_disk_is_grown_and_overwritten(sim: VcsimServer, sim_session: VCenterSession) -> None:
    """The backup is larger than the disk now (1 MiB): the disk is extended, then written."""
    vm = handle_of(sim, VM)
    facts = restore.prepare_original_vm_for_restore(sim_session, vm, force=True)
    key = facts.disks[0].key
    data, _ = generated_content(12 * MIB, seed=31)
    assert restore.upload_disk(sim_session, vm, key, chunks(data, 300_000), len(data)) == 12 * MIB
    assert disk_state(sim, vm) == [(key, 12 * MIB, sha(data))]
    assert vms.read_vm(sim_session, vm).disk(key).capacity_bytes == 12 * MIB


def test_growing_a_disk_does_not_grow_the_simulators_flat_file(
    sim: VcsimServer, sim_session: VCenterSession
) -> None:
    """Why uploads always write the full capacity: the file is what the PUT makes it."""
    vm = handle_of(sim, VM)
    key = vms.read_vm(sim_session, vm).disks[0].key
    assert restore.extend_disk(sim_session, vm, key, 5 * MIB + 1) == 5 * MIB + 1024  # whole KiB
    assert restore.extend_disk(sim_session, vm, key, MIB) == 5 * MIB + 1024  # never shrinks
    assert disk_state(sim, vm) == [(key, 5 * MIB + 1024, sha(b""))]


def test_a_smaller_image_is_followed_by_zeros(sim: VcsimServer, sim_session: VCenterSession) -> None:
    content = fill_disk(sim, VM, 4 * MIB, seed=41, kind="random")
    vm = handle_of(sim, VM)
    restore.prepare_original_vm_for_restore(sim_session, vm, force=True)
    image = b"\xab" * (MIB + 512)
    restore.upload_disk(sim_session, vm, content.disk_key, [image], len(image))
    assert disk_state(sim, vm) == [(content.disk_key, 4 * MIB, sha(image + bytes(4 * MIB - len(image))))]


def test_an_upload_that_delivers_the_wrong_amount_fails_clearly(
    sim: VcsimServer, sim_session: VCenterSession
) -> None:
    vm = handle_of(sim, VM)
    facts = restore.prepare_original_vm_for_restore(sim_session, vm, force=True)
    key = facts.disks[0].key
    with pytest.raises(DiskIOError) as caught:
        restore.upload_disk(sim_session, vm, key, iter([b"\0" * 1000]), MIB)  # the repository stream broke
    assert "ended after 1000 of 1048576 bytes" in caught.value.message
    assert caught.value.file.endswith("disk1-flat.vmdk")
    with pytest.raises(DiskIOError, match="longer than"):
        restore.upload_disk(sim_session, vm, key, iter([b"\0" * MIB, b"\0"]), MIB)
    with pytest.raises(VCenterError) as missing:
        restore.upload_disk(sim_session, vm, 4242, [b""], 0)
    assert missing.value.kind is VCenterErrorKind.NOT_FOUND
