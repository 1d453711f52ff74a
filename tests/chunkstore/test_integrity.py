"""Damage detection: corrupted and missing chunks, on restore, random access and verify."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.chunkstore import (
    ChunkDamaged,
    ChunkMissing,
    DiskImageReader,
    DiskIndex,
    ObjectDamaged,
    Repository,
    backup_disk,
    iter_disk,
    verify,
)
from app.chunkstore.ids import chunk_key
from tests.chunkstore.conftest import CHUNK, BytesReader, disk_bytes, new_repo


def _two_restore_points(root: Path, encrypted: bool) -> tuple[Repository, bytes, bytes]:
    repo = new_repo(root, encrypted=encrypted)
    vm1 = disk_bytes(8 * CHUNK, kinds="rt", seed=21)
    vm2 = vm1[: 4 * CHUNK] + disk_bytes(4 * CHUNK, kinds="rt", seed=22)  # shares its first four chunks
    for rp, data in (("rp-vm1", vm1), ("rp-vm2", vm2)):
        result = backup_disk(repo, BytesReader(data), len(data))
        writer = repo.begin_restore_point(rp, vm_config={"name": rp})
        writer.add_disk(key="2000", label="Hard disk 1", index=result.index)
        writer.commit()
    return repo, vm1, vm2


def _index(repo: Repository, rp: str) -> DiskIndex:
    return repo.read_index(repo.read_restore_point(rp).disks[0])


@pytest.mark.parametrize("encrypted", [False, True])
def test_corrupted_chunk_detected_on_restore_and_verify(tmp_path: Path, encrypted: bool) -> None:
    root = tmp_path / "r"
    repo, vm1, _ = _two_restore_points(root, encrypted)
    assert verify(repo).ok
    index1 = repo.read_index(repo.read_restore_point("rp-vm1").disks[0])
    shared = index1.chunk_id(1)  # in both restore points
    only_vm1 = index1.chunk_id(6)
    for victim in (shared, only_vm1):
        path = root / chunk_key(victim)
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        path.write_bytes(bytes(blob))

    with pytest.raises(ChunkDamaged) as info:
        b"".join(iter_disk(repo, index1))
    assert info.value.chunk_id == shared  # the first bad chunk in disk order
    assert shared.hex() in str(info.value)

    with pytest.raises(ChunkDamaged):
        DiskImageReader(repo, index1).read_at(6 * CHUNK + 10, 10)
    assert DiskImageReader(repo, index1).read_at(2 * CHUNK, 100) == vm1[2 * CHUNK : 2 * CHUNK + 100]

    report = verify(repo, workers=2)
    assert not report.ok
    assert not report.missing
    assert {p.chunk_id for p in report.damaged} == {shared, only_vm1}
    by_id = {p.chunk_id: p for p in report.damaged}
    assert by_id[shared].restore_point_ids == ("rp-vm1", "rp-vm2")
    assert by_id[only_vm1].restore_point_ids == ("rp-vm1",)
    assert by_id[shared].affected[0].disk_key == "2000"
    assert report.affected_restore_points == ["rp-vm1", "rp-vm2"]
    assert report.restore_points == 2
    assert report.chunks_checked == len(index1.unique_ids() | _index(repo, "rp-vm2").unique_ids())


def test_deleted_chunk_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo, _, _ = _two_restore_points(root, encrypted=False)
    index2 = repo.read_index(repo.read_restore_point("rp-vm2").disks[0])
    victim = index2.chunk_id(5)
    (root / chunk_key(victim)).unlink()
    with pytest.raises(ChunkMissing) as info:
        b"".join(iter_disk(repo, index2))
    assert info.value.chunk_id == victim
    assert victim.hex() in str(info.value)
    report = verify(repo)
    assert [p.chunk_id for p in report.missing] == [victim]
    assert report.missing[0].restore_point_ids == ("rp-vm2",)
    assert report.missing[0].kind == "missing"
    assert not report.damaged


def test_damaged_index_and_manifest_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo, _, _ = _two_restore_points(root, encrypted=True)
    disk = repo.read_restore_point("rp-vm1").disks[0]
    path = root / disk.index_key
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(ObjectDamaged, match="index"):
        repo.read_index(disk)
    (root / "restore-points" / "rp-vm2").write_bytes(b"garbage")
    with pytest.raises(ObjectDamaged):
        repo.read_restore_point("rp-vm2")
    report = verify(repo)
    assert not report.ok
    assert len(report.damaged_objects) == 2


def test_manifest_cannot_be_swapped_in_encrypted_repo(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo, _, _ = _two_restore_points(root, encrypted=True)
    (root / "restore-points" / "rp-vm1").write_bytes((root / "restore-points" / "rp-vm2").read_bytes())
    with pytest.raises(ObjectDamaged, match="authentication"):
        repo.read_restore_point("rp-vm1")
