"""read_inventory against the govmomi simulator, checked item by item against an
independent reader (tests.vadp.reference) and against what the simulator model is known to
contain."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from app.vadp import inventory
from app.vadp.types import DatastoreInfo, DiskInfo, HostInfo, InventorySnapshot, VmInfo
from tests.support.vcsim import VcsimServer
from tests.vadp import reference
from tests.vadp.reference import datacenter_of, find, folder_path, objects, props, wait_for_task

pytestmark = pytest.mark.vcsim

# What the simulator main builds by default: one datacenter with a standalone host and a
# three-host cluster, two VMs on each, one local datastore.
DEFAULT_HOSTS = {"DC0_H0": None, "DC0_C0_H0": "DC0_C0", "DC0_C0_H1": "DC0_C0", "DC0_C0_H2": "DC0_C0"}
DEFAULT_VMS = {"DC0_H0_VM0", "DC0_H0_VM1", "DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"}


def expected_hosts(si: Any) -> dict[str, HostInfo]:
    result = {}
    for host in objects(si, vim.HostSystem):
        p = props(si, host, "name", "parent", "runtime")
        parent = p["parent"]
        is_cluster = isinstance(parent, vim.ClusterComputeResource)
        cluster = props(si, parent, "name")["name"] if is_cluster else None
        result[host._moId] = HostInfo(
            moid=host._moId,
            name=p["name"],
            cluster=cluster,
            datacenter=datacenter_of(si, host),
            connection_state=p["runtime"].connectionState,
            power_state=p["runtime"].powerState,
            in_maintenance_mode=p["runtime"].inMaintenanceMode,
        )
    return result


def expected_datastores(si: Any) -> dict[str, DatastoreInfo]:
    result = {}
    for datastore in objects(si, vim.Datastore):
        p = props(si, datastore, "name", "summary")
        summary = p["summary"]
        result[datastore._moId] = DatastoreInfo(
            moid=datastore._moId,
            name=p["name"],
            type=summary.type,
            url=summary.url,
            capacity_bytes=summary.capacity,
            free_bytes=summary.freeSpace,
            accessible=summary.accessible,
            datacenter=datacenter_of(si, datastore),
        )
    return result


def expected_vms(si: Any) -> dict[str, VmInfo]:
    result = {}
    for vm in objects(si, vim.VirtualMachine):
        p = props(si, vm, "name", "config", "runtime", "datastore", "guest")
        config = p["config"]
        disks = tuple(
            DiskInfo(
                key=device.key,
                label=device.deviceInfo.label,
                capacity_bytes=device.capacityInKB * 1024,
                datastore_moid=device.backing.datastore._moId,
                file_name=device.backing.fileName,
            )
            for device in config.hardware.device
            if isinstance(device, vim.vm.device.VirtualDisk)
        )
        result[vm._moId] = VmInfo(
            moid=vm._moId,
            instance_uuid=config.instanceUuid,
            bios_uuid=config.uuid,
            name=p["name"],
            power_state=p["runtime"].powerState,
            host_moid=p["runtime"].host._moId,
            datastore_moids=tuple(ds._moId for ds in p["datastore"]),
            disks=disks,
            guest_os=config.guestFullName,
            folder_path=folder_path(si, vm),
            tools_running=p["guest"].toolsRunningStatus == "guestToolsRunning",
            is_template=config.template,
        )
    return result


def assert_matches_reference(snapshot: InventorySnapshot, server: VcsimServer) -> None:
    """Every host, datastore and VM equals what the reference reader sees, field by field."""
    with reference.session(server) as si:
        assert {h.moid: h for h in snapshot.hosts} == expected_hosts(si)
        assert {d.moid: d for d in snapshot.datastores} == expected_datastores(si)
        vms = {vm.moid: vm for vm in snapshot.vms}
        assert vms == expected_vms(si)
        about = si.RetrieveContent().about
        assert (snapshot.about.instance_uuid, snapshot.about.api_type) == (about.instanceUuid, about.apiType)


@pytest.fixture(scope="module")
def snapshot(vcsim: VcsimServer) -> InventorySnapshot:
    return inventory.read_inventory(reference.endpoint(vcsim))


def test_inventory_matches_an_independent_read(snapshot: InventorySnapshot, vcsim: VcsimServer) -> None:
    assert_matches_reference(snapshot, vcsim)


def test_inventory_has_the_simulated_model(snapshot: InventorySnapshot) -> None:
    assert {h.name: h.cluster for h in snapshot.hosts} == DEFAULT_HOSTS
    assert {h.datacenter for h in snapshot.hosts} == {"DC0"}
    assert all(h.connection_state == "connected" and h.power_state == "poweredOn" for h in snapshot.hosts)
    assert [d.name for d in snapshot.datastores] == ["LocalDS_0"]
    datastore = snapshot.datastores[0]
    assert 0 < datastore.free_bytes < datastore.capacity_bytes
    assert datastore.accessible
    assert datastore.datacenter == "DC0"
    assert {vm.name for vm in snapshot.vms} == DEFAULT_VMS
    host_moids = {h.moid for h in snapshot.hosts}
    for vm in snapshot.vms:
        assert vm.folder_path == "/DC0/vm"
        assert vm.power_state == "poweredOn"
        assert vm.host_moid in host_moids
        assert vm.datastore_moids == (datastore.moid,)
        assert not vm.is_template
        assert len(vm.instance_uuid) == 36
        assert vm.instance_uuid != vm.bios_uuid
        # The simulator sets capacityInKB only, so this also checks the KB fallback.
        assert [(d.capacity_bytes, d.datastore_moid) for d in vm.disks] == [(1024 * 1024, datastore.moid)]
        assert vm.disks[0].file_name == f"[LocalDS_0] {vm.name}/disk1.vmdk"
    assert len({vm.instance_uuid for vm in snapshot.vms}) == len(snapshot.vms)


def test_tags_are_available_and_empty_without_tags(snapshot: InventorySnapshot) -> None:
    assert snapshot.tags_available
    assert all(vm.tags == () for vm in snapshot.vms)


async def test_read_inventory_async_reads_the_same(snapshot: InventorySnapshot, vcsim: VcsimServer) -> None:
    assert await inventory.read_inventory_async(reference.endpoint(vcsim)) == snapshot


def test_inventory_over_https_with_verification_off(vcsim_tls: VcsimServer) -> None:
    snapshot = inventory.read_inventory(reference.endpoint(vcsim_tls, verify_tls=False))
    assert {vm.name for vm in snapshot.vms} == DEFAULT_VMS
    assert snapshot.tags_available
    assert_matches_reference(snapshot, vcsim_tls)


# A dedicated, mutated simulator: two datacenters (DC1 inside a folder), two clusters each,
# a powered-off VM, a template, a host in maintenance mode and a VM in nested folders.
RICH_ARGS = ["-dc", "2", "-cluster", "2", "-folder", "1"]


@pytest.fixture(scope="module")
def mutated(vcsim_binary: Path) -> Iterator[tuple[VcsimServer, InventorySnapshot]]:
    with VcsimServer(vcsim_binary).start(extra_args=RICH_ARGS) as server:
        with reference.session(server) as si:
            wait_for_task(si, find(si, vim.VirtualMachine, "DC0_H0_VM0").PowerOffVM_Task())
            template = find(si, vim.VirtualMachine, "DC0_H0_VM1")
            wait_for_task(si, template.PowerOffVM_Task())
            template.MarkAsTemplate()
            wait_for_task(si, find(si, vim.HostSystem, "DC0_C0_H1").EnterMaintenanceMode_Task(timeout=0))
            datacenter = find(si, vim.Datacenter, "DC0")
            vm_folder = props(si, datacenter, "vmFolder")["vmFolder"]
            nightly = vm_folder.CreateFolder("backups").CreateFolder("nightly")
            wait_for_task(si, nightly.MoveIntoFolder_Task([find(si, vim.VirtualMachine, "DC0_C0_RP0_VM0")]))
        yield server, inventory.read_inventory(reference.endpoint(server))


def by_name(snapshot: InventorySnapshot) -> dict[str, VmInfo]:
    return {vm.name: vm for vm in snapshot.vms}


def test_mutated_inventory_matches_an_independent_read(
    mutated: tuple[VcsimServer, InventorySnapshot],
) -> None:
    server, snapshot = mutated
    assert_matches_reference(snapshot, server)


def test_powered_off_vm_and_template(mutated: tuple[VcsimServer, InventorySnapshot]) -> None:
    vms = by_name(mutated[1])
    assert vms["DC0_H0_VM0"].power_state == "poweredOff"
    assert not vms["DC0_H0_VM0"].is_template
    assert vms["DC0_H0_VM1"].is_template
    assert vms["DC0_H0_VM1"].power_state == "poweredOff"
    assert vms["DC0_C0_RP0_VM1"].power_state == "poweredOn"
    assert [vm.name for vm in mutated[1].vms if vm.is_template] == ["DC0_H0_VM1"]


def test_host_in_maintenance_mode(mutated: tuple[VcsimServer, InventorySnapshot]) -> None:
    in_maintenance = [h.name for h in mutated[1].hosts if h.in_maintenance_mode]
    assert in_maintenance == ["DC0_C0_H1"]


def test_folder_paths_and_datacenters(mutated: tuple[VcsimServer, InventorySnapshot]) -> None:
    snapshot = mutated[1]
    vms = by_name(snapshot)
    assert vms["DC0_C0_RP0_VM0"].folder_path == "/DC0/vm/backups/nightly"
    assert vms["DC0_C1_RP0_VM0"].folder_path == "/DC0/vm"
    dc1_paths = {vm.folder_path for vm in snapshot.vms if vm.name.startswith("DC1_")}
    assert dc1_paths == {"/DC1/vm/F0"}  # the simulator's -folder puts DC1's VMs into folder F0
    assert {h.cluster for h in snapshot.hosts if h.datacenter == "DC1"} == {"DC1_C0", "DC1_C1", None}
    assert {d.datacenter for d in snapshot.datastores} == {"DC0", "DC1"}


def test_the_shared_simulator_was_not_touched(
    mutated: tuple[VcsimServer, InventorySnapshot], snapshot: InventorySnapshot, vcsim: VcsimServer
) -> None:
    """The mutations above went to their own simulator (guards against fixture mix-ups)."""
    assert mutated[0].port != vcsim.port
    assert inventory.read_inventory(reference.endpoint(vcsim)) == snapshot
