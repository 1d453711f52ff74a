"""The backup runner against vcsim and a real repository: leftovers of earlier attempts, a damaged
previous point, CBT that was off, and independent disks."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest
from pyVmomi import vim

from app.agent.repositories import RepositoryCache
from app.agent.runners.backup import BackupRunner, _later_attempt, same_cbt_epoch
from app.agent.runtime import JobRuntime
from app.chunkstore import Repository, open_backend
from app.contracts.agent import JobAssignment, PreviousDisk, PreviousPoint
from app.vadp import snapshots
from app.vadp.session import VCenterSession, open_session
from app.vadp.types import SnapshotHandle, VmDisk, VmFacts, VmHandle
from tests.agent import test_file_restore_guest
from tests.agent.test_backup_runner_cbt import VM, assignment, reference_snapshots
from tests.support.vcsim import VcsimServer
from tests.support.vcsim_fixtures import VcsimFactory
from tests.vadp import reference
from tests.vadp.conftest import handle_of
from tests.vadp.disks import fill_disk
from tests.vadp.fake_cbt import FakeChangedBlockTracker

pytestmark = pytest.mark.vcsim

MIB = 1 << 20


def runner(tracker: FakeChangedBlockTracker | None = None) -> BackupRunner:
    """Change ids made up per snapshot (vcsim reports none), of one tracking epoch."""
    seen: dict[str, str] = {}

    def change_id(session: VCenterSession, snapshot: SnapshotHandle, disk_key: int) -> str:
        return seen.setdefault(snapshot.moid, f"52 aa bb/{len(seen) + 1}")

    return BackupRunner(
        repositories=RepositoryCache(), cbt=tracker or FakeChangedBlockTracker(), change_ids=change_id
    )


def disk_to_back_up(
    tmp_path: Path, vcsim_factory: VcsimFactory, seed: int
) -> tuple[VcsimServer, Path, Repository]:
    """A fresh simulator whose VM has 4 MiB of random data, and an empty repository."""
    server = vcsim_factory()
    repo_path = tmp_path / "repository"
    repo = Repository.create(open_backend(repo_path))
    fill_disk(server, VM, 4 * MIB, seed=seed, kind="random")
    return server, repo_path, repo


def next_of(first: JobAssignment, server: VcsimServer, repo_url: str) -> JobAssignment:
    assert first.backup is not None
    point = first.backup.restore_point_id
    return assignment(
        server, repo_url, PreviousPoint(id=point, disks=[PreviousDisk(key=2000, change_id="52 aa bb/1")])
    )


def test_leftovers_of_earlier_attempts_and_jobs_go_before_the_snapshot(
    tmp_path: Path, vcsim_factory: VcsimFactory
) -> None:
    server, repo_path, _ = disk_to_back_up(tmp_path, vcsim_factory, seed=3)
    a = assignment(server, repo_path.as_uri(), None)
    assert a.backup is not None
    a.attempt = 2
    a.backup.snapshot_name = f"vmrecovery-p2-{a.job_id}-2"
    with open_session(reference.endpoint(server)) as session:
        vm = handle_of(server, VM)
        # Attempt 1 on another proxy (its task failed after vCenter took the snapshot), and an
        # earlier job's; the old code looked for this attempt's own name only.
        for name in (f"vmrecovery-p1-{uuid.uuid4()}-1", f"vmrecovery-p1-{a.job_id}-1"):
            snapshots.create_snapshot(session, vm, name)
    result = runner().run(a, JobRuntime(assignment=a))
    assert result.outcome == "succeeded", result.error
    assert reference_snapshots(server) == []


def test_a_later_attempts_snapshot_is_not_a_leftover() -> None:
    """A worker superseded while held up before its snapshot must not remove the one the current
    attempt reads (names match exactly: attempt 1 is not a prefix match of attempt 12)."""
    job = uuid.uuid4()
    a = JobAssignment.model_construct(job_id=job, attempt=1)
    assert _later_attempt(f"vmrecovery-p3-{job}-2", a)
    assert _later_attempt(f"vmrecovery-p3-{job}-12", a)
    assert not _later_attempt(f"vmrecovery-p1-{job}-1", a)
    assert not _later_attempt(f"vmrecovery-p1-{uuid.uuid4()}-5", a)


def test_a_damaged_previous_point_is_read_around(tmp_path: Path, vcsim_factory: VcsimFactory) -> None:
    server, repo_path, repo = disk_to_back_up(tmp_path, vcsim_factory, seed=4)
    run = runner()
    first = assignment(server, repo_path.as_uri(), None)
    assert run.run(first, JobRuntime(assignment=first)).outcome == "succeeded"
    assert first.backup is not None
    point = repo.read_restore_point(str(first.backup.restore_point_id))
    index_files = [p for p in repo_path.rglob("*") if p.is_file() and point.disks[0].index_key in str(p)]
    assert index_files
    index_files[0].write_bytes(b"damaged")

    second = next_of(first, server, repo_path.as_uri())
    result = run.run(second, JobRuntime(assignment=second))
    assert result.outcome == "succeeded", result.error
    assert result.backup is not None and not result.backup.disks[0].used_cbt
    assert any("cannot be read" in w for w in result.warnings), result.warnings


def test_changes_are_not_asked_for_when_cbt_was_off_before_the_backup(
    tmp_path: Path, vcsim_factory: VcsimFactory
) -> None:
    server, repo_path, _ = disk_to_back_up(tmp_path, vcsim_factory, seed=5)
    tracker = FakeChangedBlockTracker()
    run = runner(tracker)
    first = assignment(server, repo_path.as_uri(), None)
    assert run.run(first, JobRuntime(assignment=first)).outcome == "succeeded"
    with reference.session(server) as si:  # someone turns CBT off between the two backups
        vm = reference.find(si, vim.VirtualMachine, VM)
        spec = vim.vm.ConfigSpec(changeTrackingEnabled=False)
        reference.wait_for_task(si, vm.ReconfigVM_Task(spec=spec))

    second = next_of(first, server, repo_path.as_uri())
    result = run.run(second, JobRuntime(assignment=second))
    assert result.outcome == "succeeded", result.error
    assert result.backup is not None and not result.backup.disks[0].used_cbt
    assert tracker.questions == []  # writes while CBT was off were never tracked


def test_an_independent_disk_of_a_running_vm_is_not_read_live(
    tmp_path: Path, vcsim_factory: VcsimFactory
) -> None:
    server, repo_path, _ = disk_to_back_up(tmp_path, vcsim_factory, seed=6)
    with reference.session(server) as si:
        vm = reference.find(si, vim.VirtualMachine, VM)
        disk = next(
            d
            for d in reference.props(si, vm, "config")["config"].hardware.device
            if isinstance(d, vim.vm.device.VirtualDisk)
        )
        disk.backing.diskMode = "independent_persistent"
        change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)
        reference.wait_for_task(si, vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[change])))
    a = assignment(server, repo_path.as_uri(), None)
    result = runner().run(a, JobRuntime(assignment=a))
    # Its only disk: nothing could be backed up, which must not count as a backup. (With other
    # disks, the independent one is left out with a warning.)
    assert result.outcome == "failed" and result.error_kind == "permanent", result
    assert "every disk of the VM is independent" in (result.error or "")
    assert reference_snapshots(server) == []


def test_changes_are_asked_for_only_within_one_tracking_epoch() -> None:
    assert same_cbt_epoch("52 aa bb/1", "52 aa bb/7")
    assert not same_cbt_epoch("52 aa bb/1", "52 cc dd/2")  # CBT was reset in between
    assert not same_cbt_epoch(None, "52 aa bb/2") and not same_cbt_epoch("52 aa bb/1", None)


def test_of_several_disks_an_independent_one_is_left_out_with_a_warning(tmp_path: Path) -> None:
    def disk(key: int, mode: str) -> VmDisk:
        name = f"[ds] vm/{key}.vmdk"
        return VmDisk(key, f"Hard disk {key}", MIB, name, None, 1000, 0, "flat", disk_mode=mode)

    disks = (disk(2000, "persistent"), disk(2001, "independent_persistent"))
    vm = VmFacts(
        VmHandle("vm-1"), "vm", "u", "poweredOn", "", None, (), disks, cbt_enabled=True,
        has_snapshots=False, vmx_path="[ds] vm/vm.vmx",
    )  # fmt: skip
    a = test_file_restore_guest.assignment(tmp_path, str(uuid.uuid4()), [], None)
    runtime = JobRuntime(assignment=a)
    assert [d.key for d in BackupRunner._snapshotted(disks, vm, runtime)] == [2000]
    assert any("Hard disk 2001 is an independent disk" in w for w in runtime.warnings)
    stopped = dataclasses.replace(vm, power_state="poweredOff")  # still files: both are read
    assert [d.key for d in BackupRunner._snapshotted(disks, stopped, runtime)] == [2000, 2001]
