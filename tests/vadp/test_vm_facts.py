"""Finding a VM by instance UUID and reading its facts and datastore space (read-only)."""

from __future__ import annotations

from typing import Any

import pytest
from pyVmomi import vim

from app.vadp import vms
from app.vadp.errors import VCenterError, VCenterErrorKind
from app.vadp.session import VCenterSession, open_session
from app.vadp.types import VmHandle
from tests.support.vcsim import VcsimServer
from tests.vadp import reference
from tests.vadp.reference import objects, props

pytestmark = pytest.mark.vcsim


def expected_facts(si: Any, vm: Any) -> dict[str, Any]:
    p = props(si, vm, "name", "config", "runtime", "guest", "datastore")
    disks = [d for d in p["config"].hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    return {
        "name": p["name"],
        "instance_uuid": p["config"].instanceUuid,
        "power_state": p["runtime"].powerState,
        "tools": p["guest"].toolsRunningStatus,
        "host": (p["runtime"].host._moId, props(si, p["runtime"].host, "name")["name"]),
        "datastores": [(d._moId, props(si, d, "name")["name"]) for d in p["datastore"]],
        "disks": [
            (d.key, d.capacityInKB * 1024, d.backing.fileName, d.controllerKey, d.unitNumber) for d in disks
        ],
    }


def test_find_vm_by_instance_uuid_matches_an_independent_read(
    vcsim: VcsimServer, shared_session: VCenterSession
) -> None:
    with reference.session(vcsim) as si:
        all_vms = objects(si, vim.VirtualMachine)
        assert len(all_vms) >= 4
        for vm in all_vms:
            expected = expected_facts(si, vm)
            facts = vms.find_vm(shared_session, expected["instance_uuid"])
            assert facts.handle == VmHandle(vm._moId)
            actual = {
                "name": facts.name,
                "instance_uuid": facts.instance_uuid,
                "power_state": facts.power_state,
                "tools": facts.tools_running_status,
                "host": (facts.host.moid, facts.host.name) if facts.host else None,
                "datastores": [(d.moid, d.name) for d in facts.datastores],
                "disks": [
                    (d.key, d.capacity_bytes, d.file_name, d.controller_key, d.unit_number)
                    for d in facts.disks
                ],
            }
            assert actual == expected
            assert not facts.tools_running  # the simulator's VMs run no VMware Tools
            assert not facts.cbt_enabled
            assert not facts.has_snapshots
            assert facts.vmx_path.endswith(f"{facts.name}/{facts.name}.vmx")
            (disk,) = facts.disks
            assert (disk.backing, disk.has_parent, disk.change_id) == ("flat", False, None)
            assert disk.datastore == facts.datastores[0]


def test_unknown_instance_uuid_is_not_found(shared_session: VCenterSession) -> None:
    with pytest.raises(VCenterError) as caught:
        vms.find_vm(shared_session, "00000000-0000-0000-0000-000000000000")
    assert caught.value.kind is VCenterErrorKind.NOT_FOUND
    assert "00000000-0000-0000-0000-000000000000" in caught.value.message
    assert not caught.value.transient


def test_a_vanished_vm_is_not_found(shared_session: VCenterSession) -> None:
    with pytest.raises(VCenterError) as caught:
        vms.read_vm(shared_session, VmHandle("vm-999999"))
    assert caught.value.kind is VCenterErrorKind.NOT_FOUND


def test_datastore_space_matches_the_datastore_summaries(
    vcsim: VcsimServer, shared_session: VCenterSession
) -> None:
    with reference.session(vcsim) as si:
        vm = reference.find(si, vim.VirtualMachine, "DC0_C0_RP0_VM0")
        # datastore_space asks vCenter to refresh the figures first, so read them after it.
        spaces = vms.datastore_space(shared_session, VmHandle(vm._moId))
        expected = []
        for ds in props(si, vm, "datastore")["datastore"]:
            summary = props(si, ds, "summary")["summary"]
            expected.append((summary.name, summary.capacity, summary.freeSpace))
    assert [tuple(space) for space in spaces] == sorted(expected)
    (space,) = spaces
    assert space.name == "LocalDS_0"
    assert 0 < space.free_bytes <= space.capacity_bytes


def test_sessions_log_out_and_refuse_use_after_close(vcsim: VcsimServer) -> None:
    session = open_session(reference.endpoint(vcsim))
    assert session.soap_cookie().startswith("vmware_soap_session=")
    session.close()
    session.close()  # idempotent
    with pytest.raises(VCenterError):
        _ = session.http
