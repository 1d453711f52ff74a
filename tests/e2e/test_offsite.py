"""Offsite copies end to end: real serve and proxy processes, vcsim, and an offsite repository; the
onsite repository is then deleted and every copied point still restores byte-exact, read offsite."""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from tests.e2e.stack import Stack
from tests.support.seaweed import SeaweedServer, seaweed  # noqa: F401 (seaweed: a fixture)
from tests.support.vcsim_fixtures import VcsimFactory
from tests.vadp import reference
from tests.vadp.disks import fill_disk, flat_name, put_file

pytestmark = pytest.mark.vcsim

MIB = 1024 * 1024
VM = "DC0_H0_VM0"


@pytest.fixture(params=["filesystem", "s3"])
def stack(request: pytest.FixtureRequest, tmp_path: Path, vcsim_factory: VcsimFactory) -> Iterator[Stack]:
    """Offsite on a second filesystem path, or on a real S3 object store (SeaweedFS)."""
    offsite: dict[str, str] = {"VMR_OFFSITE_REPOSITORY": str(tmp_path / "offsite")}
    if request.param == "s3":
        server: SeaweedServer = request.getfixturevalue("seaweed")
        offsite = {
            "VMR_OFFSITE_REPOSITORY": server.location(server.new_bucket("offsite"), "vmr"),
            "VMR_OFFSITE_ACCESS_KEY_ID": server.credentials.access_key,
            "VMR_OFFSITE_SECRET_ACCESS_KEY": server.credentials.secret_key,
        }
    deployment = Stack(
        tmp_path,
        vcsim_factory(),
        VMR_REPOSITORY_PASSPHRASE="onsite secret",
        VMR_OFFSITE_PASSPHRASE="offsite secret",
        **offsite,
    )
    try:
        yield deployment.start()
    finally:
        deployment.stop()


def wait_copy(stack: Stack, point_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        point = stack.get(f"/restore-points/{point_id}")
        if point["copy_status"] in ("offsite", "copy_failed"):
            return point  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"the copy of {point_id} did not end: {point}\n{stack.log('proxy.log')}")


def test_points_copied_offsite_restore_after_the_onsite_repository_is_lost(stack: Stack) -> None:
    stack.post(
        "/policies",
        {
            "tenant_id": stack.tenant_id,
            "name": "offsite",
            "selection": {"vm_ids": [stack.vm(VM)["id"]]},
            "offsite_copy": True,
        },
    )
    first = fill_disk(stack.vcsim, VM, 32 * MIB, seed=7, kind="random")
    job = stack.wait_job(stack.backup(VM)["id"])
    assert job["state"] == "succeeded", job
    point1 = wait_copy(stack, job["result"]["restore_point_id"])
    assert point1["copy_status"] == "offsite" and point1["copied_at"], point1
    # When the copy ended, not when the point was taken (the old value hid the copy's lag).
    assert point1["copied_at"] > point1["created_at"], point1
    (copy1,) = stack.get("/jobs", kind="offsite_copy")["items"]
    assert copy1["state"] == "succeeded" and copy1["result"]["chunks_copied"] == copy1["result"]["chunks"] > 0

    # A second point of a 2%-changed disk moves only the chunks that changed.
    changed = bytearray(first.data)
    rng = random.Random(9)
    for _ in range(2):
        at = rng.randrange(0, len(changed) - 320 * 1024)
        changed[at : at + 320 * 1024] = rng.randbytes(320 * 1024)
    with reference.session(stack.vcsim) as si:
        datacenter = reference.datacenter_of(si, reference.find(si, vim.VirtualMachine, VM))
    assert datacenter is not None
    put_file(stack.vcsim, datacenter, flat_name(first.file_name), bytes(changed))
    job2 = stack.wait_job(stack.backup(VM)["id"])
    assert job2["state"] == "succeeded", job2
    point2 = wait_copy(stack, job2["result"]["restore_point_id"])
    assert point2["copy_status"] == "offsite"
    copy2 = next(j for j in stack.get("/jobs", kind="offsite_copy")["items"] if j["id"] != copy1["id"])
    assert copy2["result"]["bytes_copied"] < copy1["result"]["bytes_copied"] * 0.1, (
        copy1["result"],
        copy2["result"],
    )

    # The onsite repository is lost.
    shutil.rmtree(stack.workdir / "var" / "repository")
    for point, expected in ((point1, first.sha256), (point2, None)):
        restore = stack.post(
            "/restores",
            {
                "restore_point_id": point["id"],
                "target": "new",
                "new_vm": {
                    "name": f"from-offsite-{point['id'][:6]}",
                    "host_id": stack.vm(VM)["host"]["id"],
                    "datastore_id": stack.vm(VM)["datastores"][0]["id"],
                },
            },
        )
        assert restore["source_location"] == "offsite", restore
        done = stack.wait_restore(restore["id"])
        assert done["state"] == "succeeded", (done, stack.log("proxy.log"))
        if expected is not None:
            assert stack.disk_sha256(f"from-offsite-{point['id'][:6]}") == expected
