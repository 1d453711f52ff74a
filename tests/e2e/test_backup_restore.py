"""Image backup and full-VM restore end to end: real serve, real proxy process, vcsim.

Real disk contents (an ext4 filesystem made by mke2fs) go onto a simulated VM's disk, are
backed up through the proxy, changed, backed up again, and restored both as a new VM and over
the original; every restored disk is compared byte for byte (SHA-256).
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyVmomi import vim

from tests.e2e.stack import VMRECOVERY, Stack
from tests.support.vcsim import VcsimServer
from tests.support.vcsim_fixtures import VcsimFactory
from tests.vadp import reference
from tests.vadp.disks import fill_disk, flat_name, put_file

pytestmark = pytest.mark.vcsim

MIB = 1024 * 1024
VM = "DC0_H0_VM0"


@pytest.fixture
def stack(tmp_path: Path, vcsim_factory: VcsimFactory) -> Iterator[Stack]:
    deployment = Stack(tmp_path, vcsim_factory())
    try:
        yield deployment.start()
    finally:
        deployment.stop()


def rewrite_blocks(stack: Stack, vm_name: str, data: bytes, file_name: str, seed: int) -> bytes:
    """A "next day": a few clustered extents and scattered 4 KiB blocks rewritten."""
    rng = random.Random(seed)
    changed = bytearray(data)
    for _ in range(3):
        start = rng.randrange(0, len(data) - 256 * 1024) & ~4095
        changed[start : start + 256 * 1024] = rng.randbytes(256 * 1024)
    for _ in range(20):
        start = rng.randrange(0, len(data) - 4096) & ~4095
        changed[start : start + 4096] = rng.randbytes(4096)
    with reference.session(stack.vcsim) as si:
        datacenter = reference.datacenter_of(si, reference.find(si, vim.VirtualMachine, vm_name))
    assert datacenter is not None
    put_file(stack.vcsim, datacenter, flat_name(file_name), bytes(changed))
    return bytes(changed)


def point2_chunk_size(stack: Stack) -> int:
    import json

    config = json.loads((stack.workdir / "var" / "repository" / "config").read_text())
    return int(config["chunk_size"])


def test_backup_change_backup_then_restore_new_and_original_byte_exact(stack: Stack) -> None:
    first = fill_disk(stack.vcsim, VM, 64 * MIB, seed=1, kind="ext4")
    job = stack.wait_job(stack.backup(VM)["id"])
    assert job["state"] == "succeeded", job
    assert job["progress"]["percent"] == 100.0
    assert stack.snapshots_of(VM) == []  # removed after the backup
    (point1,) = stack.get("/restore-points", vm_id=stack.vm(VM)["id"])["items"]
    assert point1["size_bytes"] == 64 * MIB
    assert point1["consistency"] == "crash"  # powered on, policy not application-aware
    assert 0 < point1["bytes_stored"] < 64 * MIB

    second_data = rewrite_blocks(stack, VM, first.data, first.file_name, seed=2)
    job2 = stack.wait_job(stack.backup(VM)["id"])
    assert job2["state"] == "succeeded", job2
    point2 = stack.get(f"/restore-points/{job2['result']['restore_point_id']}")
    # The simulator has no CBT: the whole disk is read again, but only the chunks holding
    # the 23 rewritten extents are new (at most 23 chunks), far less than the disk.
    assert point2["used_cbt"] is False and point2["bytes_read"] == 64 * MIB
    assert 0 < point2["bytes_new"] <= 23 * point2_chunk_size(stack)

    vm = stack.vm(VM)
    host_id = vm["host"]["id"]
    datastore_id = vm["datastores"][0]["id"]
    restore = stack.post(
        "/restores",
        {
            "restore_point_id": point1["id"],
            "target": "new",
            "new_vm": {"name": "restored-from-1", "host_id": host_id, "datastore_id": datastore_id},
        },
    )
    done = stack.wait_restore(restore["id"])
    assert done["state"] == "succeeded", done
    assert done["initiated_at"] and done["completed_at"] and done["source_location"] == "onsite"
    assert stack.disk_sha256("restored-from-1") == first.sha256

    refused = stack.api.post("/restores", json={"restore_point_id": point2["id"], "target": "original"})
    assert refused.status_code == 409 and "powered on" in refused.json()["detail"]
    forced = stack.post("/restores", {"restore_point_id": point2["id"], "target": "original", "force": True})
    assert stack.wait_restore(forced["id"])["state"] == "succeeded"
    assert stack.disk_sha256(VM) == hashlib.sha256(second_data).hexdigest()

    # The first point is still the first disk: restoring it over the original brings it back.
    stack.sync()
    again = stack.post("/restores", {"restore_point_id": point1["id"], "target": "original"})
    assert stack.wait_restore(again["id"])["state"] == "succeeded"
    assert stack.disk_sha256(VM) == first.sha256


def test_powered_off_vm_is_backed_up(stack: Stack) -> None:
    content = fill_disk(stack.vcsim, "DC0_H0_VM1", 16 * MIB, seed=3, kind="random")
    with reference.session(stack.vcsim) as si:
        vm = reference.find(si, vim.VirtualMachine, "DC0_H0_VM1")
        reference.wait_for_task(si, vm.PowerOffVM_Task())
    stack.sync()
    job = stack.wait_job(stack.backup("DC0_H0_VM1")["id"])
    assert job["state"] == "succeeded", job
    point = stack.get(f"/restore-points/{job['result']['restore_point_id']}")
    assert point["consistency"] == "application"  # nothing runs: consistent as it is
    restore = stack.post("/restores", {"restore_point_id": point["id"], "target": "original"})
    assert stack.wait_restore(restore["id"])["state"] == "succeeded"
    assert stack.disk_sha256("DC0_H0_VM1") == content.sha256


def test_a_proxy_killed_mid_backup_leaves_no_snapshot_after_restart(stack: Stack) -> None:
    fill_disk(stack.vcsim, VM, 256 * MIB, seed=4, kind="random")
    job = stack.backup(VM)
    deadline = time.monotonic() + 60
    while not stack.snapshots_of(VM):
        assert time.monotonic() < deadline, f"no snapshot appeared\n{stack.log('proxy.log')}"
        time.sleep(0.02)
    stack.kill_proxy()
    assert stack.get(f"/jobs/{job['id']}")["state"] == "running"
    assert len(stack.snapshots_of(VM)) == 1  # the crashed proxy's snapshot

    stack.start_proxy()
    deadline = time.monotonic() + 30
    while stack.snapshots_of(VM) and any(n.startswith("vmrecovery-") for n in stack.snapshots_of(VM)):
        assert time.monotonic() < deadline, f"snapshot not cleaned up\n{stack.log('proxy.log')}"
        time.sleep(0.2)
    # The lease lapses (15 s here) and the restarted proxy takes the job again.
    finished = stack.wait_job(job["id"], timeout_s=120)
    assert finished["state"] == "succeeded", (
        f"{finished.get('error')}\n{stack.log('proxy.log')}\n{stack.log('serve.log')}"
    )
    # Exactly one more attempt: the dead proxy's unanswered long-poll claimed nothing.
    assert finished["attempt"] == 2, stack.log("proxy.log")
    assert stack.snapshots_of(VM) == []
    assert "removed snapshot vmrecovery-" in stack.log("proxy.log")


def test_corrupted_and_missing_chunks_fail_the_restore_loudly(stack: Stack) -> None:
    fill_disk(stack.vcsim, VM, 32 * MIB, seed=5, kind="random")
    job = stack.wait_job(stack.backup(VM)["id"])
    point_id = job["result"]["restore_point_id"]
    chunks = sorted((stack.workdir / "var" / "repository" / "chunks").rglob("*"))
    chunk_files = [c for c in chunks if c.is_file()]
    assert chunk_files
    victim = chunk_files[len(chunk_files) // 2]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))

    vm = stack.vm(VM)
    restore = stack.post(
        "/restores",
        {
            "restore_point_id": point_id,
            "target": "new",
            "new_vm": {
                "name": "from-damaged",
                "host_id": vm["host"]["id"],
                "datastore_id": vm["datastores"][0]["id"],
            },
        },
    )
    failed = stack.wait_restore(restore["id"])
    assert failed["state"] == "failed"
    assert victim.name in failed["error"] and point_id in failed["error"], failed["error"]
    assert "the incomplete VM was deleted; restore another point" in failed["error"], failed["error"]
    assert not stack.vm_exists("from-damaged")  # nothing half-restored left registered

    # Over the VM itself, the disks are partly overwritten when the damaged chunk is reached:
    # the user must hear that, not only that the point is damaged.
    over = stack.post("/restores", {"restore_point_id": point_id, "target": "original", "force": True})
    failed = stack.wait_restore(over["id"])
    assert failed["state"] == "failed" and victim.name in failed["error"], failed["error"]
    assert "left powered off with incompletely restored disks" in failed["error"], failed["error"]
    assert "restore another point" in failed["error"]

    verify = subprocess.run(
        [VMRECOVERY, "repository", "verify"], env=stack.env, cwd=stack.workdir, capture_output=True, text=True
    )
    assert verify.returncode == 1
    assert victim.name in verify.stdout and point_id in verify.stdout

    victim.unlink()
    missing = stack.post(
        "/restores",
        {
            "restore_point_id": point_id,
            "target": "new",
            "new_vm": {
                "name": "from-missing",
                "host_id": vm["host"]["id"],
                "datastore_id": vm["datastores"][0]["id"],
            },
        },
    )
    failed = stack.wait_restore(missing["id"])
    assert failed["state"] == "failed" and "missing" in failed["error"]
    assert not stack.vm_exists("from-missing")


@pytest.fixture
def small_datastore(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs for the simulator's datastore, so that it can be nearly filled."""
    mount = tmp_path / "ds"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_datastore_below_ten_percent_skips_the_backup(
    tmp_path: Path, vcsim_factory: VcsimFactory, small_datastore: Path
) -> None:
    server: VcsimServer = vcsim_factory(
        datastore_dir=small_datastore, extra_args=["-refresh-datastores", "1s"]
    )
    stack = Stack(tmp_path / "stack", server)
    (tmp_path / "stack").mkdir()
    try:
        stack.start()
        filler = next(p for p in small_datastore.iterdir() if p.is_dir())
        (filler / "ballast").write_bytes(b"\1" * (60 * MIB))
        # vCenter (here the simulator, every 2 s) refreshes datastore figures on its own.
        deadline = time.monotonic() + 60
        while True:
            stack.sync()
            vm = stack.vm(VM)
            if vm["datastores"][0]["space_status"] == "critical" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert vm["datastores"][0]["space_status"] == "critical"
        assert any("below 10%" in w for w in vm["warnings"])
        job = stack.wait_job(stack.backup(VM)["id"])
        assert job["state"] == "skipped"
        assert "below 10%" in job["error"] and vm["datastores"][0]["name"] in job["error"]
        assert stack.snapshots_of(VM) == []  # never started
        assert stack.get("/restore-points", vm_id=vm["id"])["total"] == 0
    finally:
        stack.stop()


def test_sigterm_stops_the_proxy_cleanly_and_credentials_never_touch_disk_or_logs(
    tmp_path: Path, vcsim_factory: VcsimFactory
) -> None:
    password = "Vc-S3cret-for-e2e-only"
    server = vcsim_factory(extra_args=["-username", "svc-backup", "-password", password])
    stack = Stack(tmp_path, server)
    try:
        stack.start()
        fill_disk(server, VM, 256 * MIB, seed=8, kind="random")
        job = stack.backup(VM)
        deadline = time.monotonic() + 60
        while not stack.snapshots_of(VM):
            assert time.monotonic() < deadline, stack.log("proxy.log")
            time.sleep(0.02)
        assert stack.proxy is not None
        stack.proxy.terminate()  # SIGTERM
        assert stack.proxy.wait(timeout=60) == 0
        assert stack.snapshots_of(VM) == []  # removed on the way out
        stopped = stack.get(f"/jobs/{job['id']}")
        if stopped["state"] != "succeeded":  # it may have finished in the meantime
            assert stopped["state"] == "queued", stopped  # failed as retryable, waiting to retry
            assert "stopped" in stopped["error"]
        for name in ("proxy.log", "serve.log"):
            assert password not in stack.log(name)
        for path in (tmp_path / "var").rglob("*"):
            if path.is_file():
                assert password.encode() not in path.read_bytes(), path
    finally:
        stack.stop()
