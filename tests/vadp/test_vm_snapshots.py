"""Backup snapshots on the simulator: quiescing rules, listing, removal and orphan clean-up.

What the simulator does (read in govmomi's simulator/snapshot.go and virtual_machine.go,
and checked here): CreateSnapshot records the VM's config in the snapshot, writes an empty
``<vm>-Snapshot<N>.vmsn`` and creates NO delta disk (the VM keeps writing its base disk);
``quiesce`` is only recorded in the tree, never refused; ``guest.toolsRunningStatus`` is
``guestToolsNotRunning`` for every VM unless set through the simulator's ``SET.*``
extraConfig back door; a VM without snapshots has no ``snapshot`` property at all.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pytest
from pyVmomi import vim

from app.vadp import snapshots, vms
from app.vadp.errors import SnapshotCleanupError, VCenterError, VCenterErrorKind
from app.vadp.session import VCenterSession
from app.vadp.types import SnapshotHandle, VmHandle
from tests.support.vcsim import VcsimServer
from tests.vadp import reference
from tests.vadp.conftest import handle_of
from tests.vadp.reference import find, props, wait_for_task

pytestmark = pytest.mark.vcsim

VM = "DC0_H0_VM0"


def set_tools_running(server: VcsimServer, vm_name: str) -> None:
    """The simulator's back door: ``SET.<property>`` extraConfig keys set VM properties."""
    option = vim.option.OptionValue(key="SET.guest.toolsRunningStatus", value="guestToolsRunning")
    with reference.session(server) as si:
        vm = find(si, vim.VirtualMachine, vm_name)
        wait_for_task(si, vm.ReconfigVM_Task(vim.vm.ConfigSpec(extraConfig=[option])))


def power_off(server: VcsimServer, vm_name: str) -> None:
    with reference.session(server) as si:
        wait_for_task(si, find(si, vim.VirtualMachine, vm_name).PowerOffVM_Task())


def tree(server: VcsimServer, vm_name: str) -> list[tuple[str, bool, str | None]]:
    """(name, quiesced, parent name) of every snapshot, read independently."""
    result: list[tuple[str, bool, str | None]] = []

    def walk(nodes: Any, parent: str | None) -> None:
        for node in nodes:
            result.append((node.name, node.quiesced, parent))
            walk(node.childSnapshotList, node.name)

    with reference.session(server) as si:
        info = props(si, find(si, vim.VirtualMachine, vm_name), "snapshot").get("snapshot")
        walk(info.rootSnapshotList if info else [], None)
    return result


def test_quiesce_without_tools_falls_back_to_crash_consistent_with_a_warning(
    sim: VcsimServer, sim_session: VCenterSession
) -> None:
    vm = handle_of(sim, VM)
    result = snapshots.create_snapshot(sim_session, vm, "vmrecovery-p1-j1", "backup", quiesce=True)
    assert not result.quiesced
    assert result.warning is not None
    assert "VMware Tools are not running" in result.warning
    assert "guestToolsNotRunning" in result.warning
    assert result.snapshot.vm == vm
    assert tree(sim, VM) == [("vmrecovery-p1-j1", False, None)]


def test_no_warning_when_quiescing_was_not_asked_for(sim: VcsimServer, sim_session: VCenterSession) -> None:
    result = snapshots.create_snapshot(sim_session, handle_of(sim, VM), "plain", quiesce=False)
    assert (result.quiesced, result.warning, result.powered_off) == (False, None, False)


def test_quiesced_snapshot_when_tools_run(sim: VcsimServer, sim_session: VCenterSession) -> None:
    set_tools_running(sim, VM)
    vm = handle_of(sim, VM)
    assert vms.read_vm(sim_session, vm).tools_running
    result = snapshots.create_snapshot(sim_session, vm, "vmrecovery-p1-j2", quiesce=True)
    assert (result.quiesced, result.warning) == (True, None)
    assert tree(sim, VM) == [("vmrecovery-p1-j2", True, None)]


def test_failed_quiesced_snapshot_is_retried_crash_consistent(
    sim: VcsimServer, sim_session: VCenterSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The simulator never fails a quiesced snapshot, so the quiesced attempt is made to fail."""
    set_tools_running(sim, VM)
    real = snapshots.start_snapshot_task
    attempts: list[bool] = []

    def quiesce_fails(
        session: VCenterSession, obj: Any, name: str, desc: str, quiesce: bool, t: float
    ) -> Any:
        attempts.append(quiesce)
        if quiesce:
            raise VCenterError(VCenterErrorKind.TASK_FAILED, "ApplicationQuiesceFault: VSS writer timed out")
        return real(session, obj, name, desc, quiesce, t)

    monkeypatch.setattr(snapshots, "start_snapshot_task", quiesce_fails)
    result = snapshots.create_snapshot(sim_session, handle_of(sim, VM), "vmrecovery-p1-j3", quiesce=True)
    assert attempts == [True, False]
    assert not result.quiesced
    assert result.warning is not None
    assert "VSS writer timed out" in result.warning
    assert "crash-consistent" in result.warning
    assert tree(sim, VM) == [("vmrecovery-p1-j3", False, None)]


def test_a_transient_failure_of_the_quiesced_attempt_is_not_retried(
    sim: VcsimServer, sim_session: VCenterSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our wait timing out may leave the task running: no second snapshot on top of it."""
    set_tools_running(sim, VM)

    def times_out(*args: Any) -> Any:
        raise VCenterError(VCenterErrorKind.TIMEOUT, "taking a quiesced snapshot did not finish")

    monkeypatch.setattr(snapshots, "start_snapshot_task", times_out)
    with pytest.raises(VCenterError) as caught:
        snapshots.create_snapshot(sim_session, handle_of(sim, VM), "vmrecovery-p1-j4", quiesce=True)
    assert caught.value.transient


def test_powered_off_vm_needs_no_quiescing_and_gets_no_warning(
    sim: VcsimServer, sim_session: VCenterSession
) -> None:
    power_off(sim, VM)
    vm = handle_of(sim, VM)
    result = snapshots.create_snapshot(sim_session, vm, "vmrecovery-p1-j5", quiesce=True)
    assert (result.quiesced, result.warning) == (False, None)
    assert result.powered_off  # read as the snapshot is taken: the backup's consistency follows it
    (info,) = snapshots.list_snapshots(sim_session, vm)
    assert info.power_state == "poweredOff"


def test_list_and_remove_nested_snapshots(sim: VcsimServer, sim_session: VCenterSession) -> None:
    vm = handle_of(sim, VM)
    assert snapshots.list_snapshots(sim_session, vm) == []  # the property is absent: no error
    first = snapshots.create_snapshot(sim_session, vm, "first", "one").snapshot
    second = snapshots.create_snapshot(sim_session, vm, "second", "two").snapshot
    listed = snapshots.list_snapshots(sim_session, vm)
    assert [(s.name, s.description, s.handle, s.parent_moid) for s in listed] == [
        ("first", "one", first, None),
        ("second", "two", second, first.moid),
    ]
    assert all(s.created_at is not None and s.created_at.tzinfo is UTC for s in listed)
    assert all(type(s.power_state) is str for s in listed)
    assert vms.read_vm(sim_session, vm).has_snapshots

    snapshots.remove_snapshot(sim_session, first)
    assert [(s.name, s.parent_moid) for s in snapshots.list_snapshots(sim_session, vm)] == [("second", None)]
    snapshots.remove_snapshot(sim_session, second)
    assert snapshots.list_snapshots(sim_session, vm) == []
    assert not vms.read_vm(sim_session, vm).has_snapshots


def test_removing_a_snapshot_that_is_gone_is_not_found(sim: VcsimServer, sim_session: VCenterSession) -> None:
    vm = handle_of(sim, VM)
    snapshot = snapshots.create_snapshot(sim_session, vm, "once").snapshot
    snapshots.remove_snapshot(sim_session, snapshot)
    with pytest.raises(VCenterError) as caught:
        snapshots.remove_snapshot(sim_session, snapshot)
    assert caught.value.kind is VCenterErrorKind.NOT_FOUND
    with pytest.raises(VCenterError) as caught:
        vms.snapshot_disks(sim_session, SnapshotHandle("snapshot-424242", vm.moid))
    assert caught.value.kind is VCenterErrorKind.NOT_FOUND


def test_orphans_are_removed_by_prefix_on_one_vm(sim: VcsimServer, sim_session: VCenterSession) -> None:
    vm = handle_of(sim, VM)
    for name in ("before-upgrade", "vmrecovery-p1-j1", "vmrecovery-p1-j2", "vmrecovery-p2-j9"):
        snapshots.create_snapshot(sim_session, vm, name)  # each a child of the previous one
    removed = snapshots.remove_snapshots_named(sim_session, vm, "vmrecovery-p1-")
    assert removed == ["vmrecovery-p1-j2", "vmrecovery-p1-j1"]  # children before parents
    assert tree(sim, VM) == [("before-upgrade", False, None), ("vmrecovery-p2-j9", False, "before-upgrade")]
    assert snapshots.remove_snapshots_named(sim_session, vm, "vmrecovery-p1-") == []


def test_orphans_are_removed_by_prefix_across_all_vms(sim: VcsimServer, sim_session: VCenterSession) -> None:
    plan = {
        "DC0_H0_VM0": ["vmrecovery-p1-j1"],
        "DC0_H0_VM1": ["nightly-by-someone-else", "vmrecovery-p1-j2"],
        "DC0_C0_RP0_VM0": ["vmrecovery-p2-j3"],
        "DC0_C0_RP0_VM1": [],
    }
    for vm_name, names in plan.items():
        for name in names:
            snapshots.create_snapshot(sim_session, handle_of(sim, vm_name), name)

    found = snapshots.find_snapshots_named(sim_session, None, "vmrecovery-p1-")
    assert sorted(s.name for s in found) == ["vmrecovery-p1-j1", "vmrecovery-p1-j2"]
    assert {s.handle.vm_moid for s in found} == {
        handle_of(sim, "DC0_H0_VM0").moid,
        handle_of(sim, "DC0_H0_VM1").moid,
    }

    removed = snapshots.remove_snapshots_named(sim_session, None, "vmrecovery-p1-")
    assert sorted(removed) == ["vmrecovery-p1-j1", "vmrecovery-p1-j2"]
    assert tree(sim, "DC0_H0_VM0") == []
    assert tree(sim, "DC0_H0_VM1") == [("nightly-by-someone-else", False, None)]
    assert tree(sim, "DC0_C0_RP0_VM0") == [("vmrecovery-p2-j3", False, None)]
    with pytest.raises(ValueError, match="empty prefix"):
        snapshots.remove_snapshots_named(sim_session, None, "")


def test_clean_up_goes_on_after_a_failure_and_reports_it(
    sim: VcsimServer, sim_session: VCenterSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    for vm_name in ("DC0_H0_VM0", "DC0_H0_VM1"):
        snapshots.create_snapshot(sim_session, handle_of(sim, vm_name), f"vmrecovery-p1-{vm_name}")
    stuck = handle_of(sim, "DC0_H0_VM0").moid
    real = snapshots.remove_snapshot

    def flaky(session: VCenterSession, snapshot: SnapshotHandle, **kwargs: Any) -> None:
        if snapshot.vm_moid == stuck:
            raise VCenterError(VCenterErrorKind.TASK_FAILED, "removing snapshot failed: FileLocked")
        real(session, snapshot, **kwargs)

    monkeypatch.setattr(snapshots, "remove_snapshot", flaky)
    with pytest.raises(SnapshotCleanupError) as caught:
        snapshots.remove_snapshots_named(sim_session, None, "vmrecovery-p1-")
    assert caught.value.removed == ["vmrecovery-p1-DC0_H0_VM1"]
    assert len(caught.value.failures) == 1
    assert "FileLocked" in caught.value.message
    assert caught.value.transient
    assert tree(sim, "DC0_H0_VM1") == []


def test_cbt_is_enabled_once_and_the_simulator_reports_no_change_ids(
    sim: VcsimServer, sim_session: VCenterSession
) -> None:
    vm = handle_of(sim, VM)
    assert vms.enable_cbt(sim_session, vm) is True
    assert vms.enable_cbt(sim_session, vm) is False
    facts = vms.read_vm(sim_session, vm)
    assert facts.cbt_enabled
    snapshot = snapshots.create_snapshot(sim_session, vm, "vmrecovery-p1-cbt").snapshot
    # A real vCenter sets backing.changeId on the snapshot's disks once CBT is active.
    assert vms.disk_change_id(sim_session, snapshot, facts.disks[0].key) is None
    with pytest.raises(VCenterError) as caught:
        vms.disk_change_id(sim_session, snapshot, 1)
    assert caught.value.kind is VCenterErrorKind.NOT_FOUND


def test_snapshot_records_the_disks_and_creates_no_delta_on_the_simulator(
    sim: VcsimServer, sim_session: VCenterSession
) -> None:
    vm = handle_of(sim, VM)
    before = vms.read_vm(sim_session, vm).disks
    snapshot = snapshots.create_snapshot(sim_session, vm, "vmrecovery-p1-d").snapshot
    assert vms.snapshot_disks(sim_session, snapshot) == before
    # On ESXi the VM would now write to <disk>-000001.vmdk; the simulator keeps the base disk.
    assert vms.read_vm(sim_session, vm).disks == before


def test_snapshot_of_a_missing_vm_is_not_found(sim_session: VCenterSession) -> None:
    with pytest.raises(VCenterError) as caught:
        snapshots.create_snapshot(sim_session, VmHandle("vm-999999"), "x")
    assert caught.value.kind is VCenterErrorKind.NOT_FOUND
