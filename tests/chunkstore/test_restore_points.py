"""Restore points: manifests written last, listing, deletion, and garbage collection."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.chunkstore import (
    FsBackend,
    Repository,
    RestorePointExists,
    RestorePointNotFound,
    backup_disk,
    gc,
    iter_disk,
)
from app.chunkstore.manifest import validate_restore_point_id
from tests.chunkstore.conftest import CHUNK, BytesReader, disk_bytes, new_repo, stored_chunk_files

LATER = datetime.now(UTC) + timedelta(days=2)


def _backup(repo: Repository, rp: str, data: bytes, *, commit: bool = True) -> None:
    result = backup_disk(repo, BytesReader(data), len(data))
    writer = repo.begin_restore_point(rp, vm_config={"name": rp, "disks": 1}, metadata={"policy": "daily"})
    writer.add_disk(key="2000", label="Hard disk 1", index=result.index, change_id="cid-1")
    if commit:
        writer.commit()


def test_list_read_delete(repo: Repository) -> None:
    assert repo.list_restore_points() == []
    _backup(repo, "b-2", disk_bytes(3 * CHUNK, seed=1))
    _backup(repo, "a-1", disk_bytes(3 * CHUNK, seed=2))
    assert repo.list_restore_points() == ["a-1", "b-2"]
    point = repo.read_restore_point("a-1")
    assert point.id == "a-1"
    assert point.vm_config == {"name": "a-1", "disks": 1}
    assert point.created_at.tzinfo is not None
    with pytest.raises(RestorePointExists):
        repo.begin_restore_point("a-1", vm_config={})
    repo.delete_restore_point("a-1")
    assert repo.list_restore_points() == ["b-2"]
    assert list(repo.backend.list("indexes/a-1/")) == []
    with pytest.raises(RestorePointNotFound):
        repo.read_restore_point("a-1")
    with pytest.raises(RestorePointNotFound):
        repo.delete_restore_point("a-1")


def test_multi_disk_restore_point(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    disks = {"2000": disk_bytes(3 * CHUNK + 1, seed=1), "2001": disk_bytes(CHUNK // 2, seed=2)}
    writer = repo.begin_restore_point("rp", vm_config={"uuid": "4201"})
    for n, (key, data) in enumerate(disks.items()):
        result = backup_disk(repo, BytesReader(data), len(data))
        writer.add_disk(key=key, label=f"Hard disk {n + 1}", index=result.index)
    with pytest.raises(ValueError, match="twice"):
        writer.add_disk(key="2000", label="again", index=result.index)
    writer.commit()
    point = Repository.open(FsBackend(tmp_path / "r")).read_restore_point("rp")
    assert [d.key for d in point.disks] == ["2000", "2001"]
    for disk in point.disks:
        assert b"".join(iter_disk(repo, repo.read_index(disk))) == disks[disk.key]


def test_vm_config_must_be_json(repo: Repository) -> None:
    writer = repo.begin_restore_point("rp", vm_config={"when": datetime.now(UTC)})
    with pytest.raises(ValueError, match="JSON"):
        writer.commit()
    assert repo.list_restore_points() == []


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "x" * 200, "with space"])
def test_restore_point_ids_are_validated(bad: str) -> None:
    with pytest.raises(ValueError, match="restore point id"):
        validate_restore_point_id(bad)


def test_crash_before_manifest_leaves_nothing_visible_and_gc_waits_for_grace(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo = new_repo(root)
    kept = disk_bytes(6 * CHUNK, kinds="rt", seed=31)
    _backup(repo, "kept", kept)
    kept_chunks = len(stored_chunk_files(root))
    # A backup that dies after writing its chunks and index but before its manifest.
    orphan = disk_bytes(5 * CHUNK, kinds="r", seed=32)
    _backup(repo, "crashed", orphan, commit=False)
    assert repo.list_restore_points() == ["kept"]
    with pytest.raises(RestorePointNotFound):
        repo.read_restore_point("crashed")
    assert len(stored_chunk_files(root)) == kept_chunks + 5

    young = gc(repo, grace=timedelta(hours=1))
    assert young.chunks_deleted == 0
    assert young.chunks_kept_young == 5
    assert young.indexes_deleted == 0
    assert len(stored_chunk_files(root)) == kept_chunks + 5

    dry = gc(repo, grace=timedelta(hours=1), now=LATER, dry_run=True)
    assert dry.chunks_deleted == 5
    assert len(stored_chunk_files(root)) == kept_chunks + 5

    old = gc(repo, grace=timedelta(hours=1), now=LATER)
    assert old.chunks_deleted == 5
    assert old.bytes_freed >= 5 * CHUNK
    assert old.indexes_deleted == 1
    assert old.chunks_referenced == kept_chunks
    assert len(stored_chunk_files(root)) == kept_chunks
    assert list(repo.backend.list("indexes/crashed/")) == []
    point = repo.read_restore_point("kept")
    assert b"".join(iter_disk(repo, repo.read_index(point.disks[0]))) == kept


def test_gc_after_delete_frees_only_unshared_chunks(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo = new_repo(root, encrypted=True)
    a = disk_bytes(6 * CHUNK, kinds="r", seed=41)
    b = a[: 3 * CHUNK] + os.urandom(3 * CHUNK)
    _backup(repo, "a", a)
    _backup(repo, "b", b)
    assert len(stored_chunk_files(root)) == 9
    repo.delete_restore_point("a")
    report = gc(repo, grace=timedelta(0), now=LATER)
    assert report.chunks_deleted == 3
    assert len(stored_chunk_files(root)) == 6
    point = repo.read_restore_point("b")
    assert b"".join(iter_disk(repo, repo.read_index(point.disks[0]))) == b
    # The process-local cache must not claim deleted chunks are present.
    again = backup_disk(repo, BytesReader(a), len(a))
    assert again.stats.chunks_new == 3


def test_gc_refuses_to_sweep_on_incomplete_mark(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo = new_repo(root)
    _backup(repo, "a", disk_bytes(3 * CHUNK, kinds="r", seed=1))
    disk = repo.read_restore_point("a").disks[0]
    (root / disk.index_key).unlink()
    with pytest.raises(Exception, match="index"):
        gc(repo, grace=timedelta(0), now=LATER)
    assert len(stored_chunk_files(root)) == 3


def test_a_backup_reusing_an_old_orphan_chunk_keeps_it_through_a_concurrent_gc(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo = new_repo(root)
    data = disk_bytes(4 * CHUNK, kinds="r", seed=41)
    _backup(repo, "crashed", data, commit=False)  # its chunks are orphans...
    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).timestamp()
    for path in stored_chunk_files(root):
        os.utime(path, (two_days_ago, two_days_ago))  # ...and old enough to be swept
    # A new backup (a fresh process: nothing cached) finds every chunk already stored...
    again = Repository.open(repo.backend)
    result = backup_disk(again, BytesReader(data), len(data))
    assert result.stats.chunks_new == 0
    # ...and a sweep runs before it commits: the dedup check touched them, so they survive.
    report = gc(again, grace=timedelta(hours=1))
    assert report.chunks_deleted == 0
    writer = again.begin_restore_point("new", vm_config={})
    writer.add_disk(key="2000", label="Hard disk 1", index=result.index)
    writer.commit()
    point = again.read_restore_point("new")
    assert b"".join(iter_disk(again, again.read_index(point.disks[0]))) == data


def test_disks_added_from_threads_each_get_their_own_index(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    disks = {str(2000 + n): disk_bytes(2 * CHUNK + n, seed=50 + n) for n in range(6)}
    indexes = {key: backup_disk(repo, BytesReader(data), len(data)).index for key, data in disks.items()}
    writer = repo.begin_restore_point("rp", vm_config={})
    barrier = threading.Barrier(len(disks))

    def add(key: str) -> None:
        barrier.wait()
        writer.add_disk(key=key, label=f"disk {key}", index=indexes[key])

    threads = [threading.Thread(target=add, args=(key,)) for key in disks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    point = writer.commit()
    assert len({d.index_key for d in point.disks}) == len(disks)
    for disk in point.disks:
        assert b"".join(iter_disk(repo, repo.read_index(disk))) == disks[disk.key]
