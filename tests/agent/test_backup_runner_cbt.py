"""The backup runner's two incremental paths against vcsim and a real repository.

The simulator lacks QueryChangedDiskAreas and change ids, so the CBT path uses the FAKE
tracker from tests/vadp/fake_cbt.py (it only answers what the test tells it) and change ids
the test makes up; everything else is real: snapshots, HTTP range reads, the repository.
"""

from __future__ import annotations

import hashlib
import random
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from app.agent.repositories import RepositoryCache
from app.agent.runners.backup import BackupRunner
from app.agent.runtime import JobRuntime
from app.chunkstore import Repository, iter_disk, open_backend
from app.contracts.agent import (
    BackupParams,
    JobAssignment,
    PreviousDisk,
    PreviousPoint,
    RepositoryAccess,
    VCenterAccess,
    VmRef,
)
from app.vadp.datastore_http import DatastoreHttpTransport, HttpDiskReader
from app.vadp.session import VCenterSession
from app.vadp.types import SnapshotHandle, VmDisk, VmHandle
from tests.support.vcsim import VcsimServer
from tests.support.vcsim_fixtures import VcsimFactory
from tests.vadp import reference
from tests.vadp.disks import fill_disk, flat_name, put_file
from tests.vadp.fake_cbt import FakeChangedBlockTracker

pytestmark = pytest.mark.vcsim

MIB = 1024 * 1024
VM = "DC0_H0_VM0"


class CountingTransport:
    """The real datastore HTTP transport, counting the bytes it reads."""

    name = "counting"

    def __init__(self) -> None:
        self.inner = DatastoreHttpTransport()
        self.bytes_read = 0
        self._lock = threading.Lock()

    def open(
        self, session: VCenterSession, vm: VmHandle, snapshot: SnapshotHandle, disk: VmDisk | int
    ) -> Any:
        reader = self.inner.open(session, vm, snapshot, disk)
        transport = self

        class Counting:
            size = reader.size

            def read_at(self, offset: int, length: int) -> bytes:
                data = reader.read_at(offset, length)
                with transport._lock:
                    transport.bytes_read += len(data)
                return data

            def close(self) -> None:
                reader.close()

        assert isinstance(reader, HttpDiskReader)
        return Counting()


def assignment(server: VcsimServer, repo_url: str, previous: PreviousPoint | None) -> JobAssignment:
    with reference.session(server) as si:
        vm = reference.find(si, vim.VirtualMachine, VM)
        instance_uuid = reference.props(si, vm, "config")["config"].instanceUuid
    job_id = uuid.uuid4()
    return JobAssignment(
        job_id=job_id,
        kind="backup",
        attempt=1,
        lease_expires_at="2030-01-01T00:00:00Z",  # type: ignore[arg-type]
        lease_s=60,
        vm=VmRef(id=uuid.uuid4(), instance_uuid=instance_uuid, moid=vm._moId, name=VM),
        vcenter=VCenterAccess(
            id=uuid.uuid4(),
            url=server.url,
            username=server.username,
            password=server.password,
            verify_tls=False,
        ),
        repository=RepositoryAccess(url=repo_url),
        backup=BackupParams(
            restore_point_id=uuid.uuid4(),
            quiesce=False,
            snapshot_name=f"vmrecovery-test-{job_id}",
            previous=previous,
        ),
    )


def rewrite(server: VcsimServer, file_name: str, data: bytes, extents: list[tuple[int, int]]) -> bytes:
    rng = random.Random(7)
    changed = bytearray(data)
    for offset, length in extents:
        changed[offset : offset + length] = rng.randbytes(length)
    with reference.session(server) as si:
        datacenter = reference.datacenter_of(si, reference.find(si, vim.VirtualMachine, VM))
    assert datacenter is not None
    put_file(server, datacenter, flat_name(file_name), bytes(changed))
    return bytes(changed)


def restored_sha256(repo: Repository, point_id: uuid.UUID) -> str:
    point = repo.read_restore_point(str(point_id))
    (disk,) = point.disks
    digest = hashlib.sha256()
    for piece in iter_disk(repo, repo.read_index(disk)):
        digest.update(piece)
    return digest.hexdigest()


def test_cbt_path_reads_only_changed_areas_and_restores_byte_exact(
    tmp_path: Path, vcsim_factory: VcsimFactory
) -> None:
    server = vcsim_factory()
    repo_path = tmp_path / "repository"
    repo = Repository.create(open_backend(repo_path))
    chunk = repo.chunk_size
    content = fill_disk(server, VM, 16 * chunk, seed=11, kind="random")

    tracker = FakeChangedBlockTracker()
    change_ids = iter(["change-1", "change-2", "change-3"])
    by_snapshot: dict[str, str] = {}

    def change_id(session: VCenterSession, snapshot: SnapshotHandle, disk_key: int) -> str:
        return by_snapshot.setdefault(snapshot.moid, next(change_ids))

    transport = CountingTransport()
    runner = BackupRunner(
        repositories=RepositoryCache(), transport=transport, cbt=tracker, change_ids=change_id, workers=2
    )
    first = assignment(server, repo_path.as_uri(), None)
    result = runner.run(first, JobRuntime(assignment=first))
    assert result.outcome == "succeeded", result.error
    assert result.backup is not None
    assert transport.bytes_read == 16 * chunk
    (disk,) = result.backup.disks
    assert disk.change_id == "change-1" and not disk.used_cbt

    # Two areas change: one inside chunk 3, one straddling chunks 9 and 10.
    extents = [(3 * chunk + 4096, 8192), (10 * chunk - 4096, 8192)]
    second_data = rewrite(server, content.file_name, content.data, extents)
    tracker.set_changes(disk.key, "change-1", extents)
    transport.bytes_read = 0
    second = assignment(
        server,
        repo_path.as_uri(),
        PreviousPoint(
            id=first.backup.restore_point_id, disks=[PreviousDisk(key=disk.key, change_id=disk.change_id)]
        ),  # type: ignore[union-attr]
    )
    result2 = runner.run(second, JobRuntime(assignment=second))
    assert result2.outcome == "succeeded", result2.error
    assert result2.backup is not None
    (disk2,) = result2.backup.disks
    assert disk2.used_cbt and disk2.change_id == "change-2"
    assert transport.bytes_read == 3 * chunk  # chunks 3, 9 and 10 only
    assert tracker.questions and tracker.questions[0][4] == "change-1"
    assert restored_sha256(repo, second.backup.restore_point_id) == hashlib.sha256(second_data).hexdigest()  # type: ignore[union-attr]
    assert restored_sha256(repo, first.backup.restore_point_id) == content.sha256  # type: ignore[union-attr]

    # The whole-disk fallback (CBT reset: the tracker does not know change-2) gives the same
    # restore point content, reading everything but storing nothing new.
    transport.bytes_read = 0
    third = assignment(
        server,
        repo_path.as_uri(),
        PreviousPoint(
            id=second.backup.restore_point_id, disks=[PreviousDisk(key=disk2.key, change_id=disk2.change_id)]
        ),  # type: ignore[union-attr]
    )
    result3 = runner.run(third, JobRuntime(assignment=third))
    assert result3.outcome == "succeeded", result3.error
    assert result3.backup is not None
    (disk3,) = result3.backup.disks
    assert not disk3.used_cbt and transport.bytes_read == 16 * chunk and disk3.bytes_new == 0
    point2 = repo.read_restore_point(str(second.backup.restore_point_id))  # type: ignore[union-attr]
    point3 = repo.read_restore_point(str(third.backup.restore_point_id))  # type: ignore[union-attr]
    assert repo.read_index(point3.disks[0]) == repo.read_index(point2.disks[0])
    assert reference_snapshots(server) == []


def reference_snapshots(server: VcsimServer) -> list[str]:
    with reference.session(server) as si:
        vm = reference.find(si, vim.VirtualMachine, VM)
        tree = reference.props(si, vm, "snapshot").get("snapshot")
        return [node.name for node in tree.rootSnapshotList] if tree else []
