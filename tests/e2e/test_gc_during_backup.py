"""Garbage collection while a backup runs loses nothing: real serve, real proxy process, vcsim.

A backup writes its chunks long before its manifest references them; only the grace period keeps
GC from sweeping them (tests/retention/test_gc.py shows that without it they are lost). Here
``vmrecovery repository gc`` runs, with its default grace period, while a backup is writing, and
the restore afterwards is byte-exact; an old unreferenced chunk left in the repository is freed
by the same run.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import VMRECOVERY, Stack
from tests.support.vcsim_fixtures import VcsimFactory
from tests.vadp.disks import fill_disk

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


def plant_old_garbage(repository: Path) -> int:
    """An unreferenced chunk two days old (as an aborted backup leaves); returns its size."""
    name = random.Random(9).randbytes(32).hex()
    path = repository / "chunks" / name[:2] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(10).randbytes(1000))
    two_days_ago = time.time() - 2 * 86400
    os.utime(path, (two_days_ago, two_days_ago))
    return 1000


def chunk_files(repository: Path) -> list[Path]:
    """Stored chunks (not the temporary files of writes in progress)."""
    return [p for p in (repository / "chunks").rglob("*") if re.fullmatch("[0-9a-f]{64}", p.name)]


def manifests(repository: Path) -> list[Path]:
    folder = repository / "restore-points"
    return list(folder.iterdir()) if folder.exists() else []


def test_gc_while_a_backup_writes_loses_nothing(stack: Stack) -> None:
    repository = stack.workdir / "var" / "repository"
    garbage = plant_old_garbage(repository)
    content = fill_disk(stack.vcsim, VM, 256 * MIB, seed=11, kind="random")
    job = stack.backup(VM)

    # Freeze the proxy as soon as the backup has stored chunks that no manifest references yet,
    # so that GC runs in the middle of the backup whatever the machine's speed.
    assert stack.proxy is not None
    deadline = time.monotonic() + 60
    while len(chunk_files(repository)) <= 1 or manifests(repository):
        assert not manifests(repository), "the backup ended before it could be caught mid-way"
        assert time.monotonic() < deadline, f"the backup stored nothing\n{stack.log('proxy.log')}"
        time.sleep(0.005)
    stack.proxy.send_signal(signal.SIGSTOP)
    try:
        assert not manifests(repository), "the backup ended before it could be caught mid-way"
        written = len(chunk_files(repository)) - 1
        gc = subprocess.run(
            [VMRECOVERY, "repository", "gc"], env=stack.env, cwd=stack.workdir, capture_output=True, text=True
        )
    finally:
        stack.proxy.send_signal(signal.SIGCONT)
    assert gc.returncode == 0, gc.stderr
    assert stack.get(f"/jobs/{job['id']}")["state"] == "running"
    freed = re.search(r"freed (\d+) chunks, (\d+) bytes", gc.stdout)
    young = re.search(r"kept (\d+) unreferenced chunks", gc.stdout)
    assert freed and young, gc.stdout
    assert (int(freed[1]), int(freed[2])) == (1, garbage)  # the old garbage, nothing else
    assert int(young[1]) >= written > 0  # the running backup's chunks, seen and spared

    finished = stack.wait_job(job["id"])
    assert finished["state"] == "succeeded", finished
    vm = stack.vm(VM)
    restore = stack.post(
        "/restores",
        {
            "restore_point_id": finished["result"]["restore_point_id"],
            "target": "new",
            "new_vm": {
                "name": "after-gc",
                "host_id": vm["host"]["id"],
                "datastore_id": vm["datastores"][0]["id"],
            },
        },
    )
    assert stack.wait_restore(restore["id"])["state"] == "succeeded"
    assert stack.disk_sha256("after-gc") == content.sha256

    verify = subprocess.run(
        [VMRECOVERY, "repository", "verify"], env=stack.env, cwd=stack.workdir, capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout
