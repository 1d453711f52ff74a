"""Copies of restore points to a repository sharing the keys: only missing chunks travel, the manifest
goes last, damage stays at the source, and the copy restores alone when the source is gone."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest

from app.chunkstore import (
    ChunkDamaged,
    FsBackend,
    Repository,
    RepositoryError,
    RestorePointNotFound,
    backup_disk,
    iter_disk,
    open_stream_backup,
    verify,
)
from app.chunkstore.copy import copy_restore_point
from app.chunkstore.ids import chunk_key
from tests.chunkstore.conftest import (
    CHUNK,
    FAST_KDF,
    PASSPHRASE,
    BytesReader,
    disk_bytes,
    new_repo,
    stored_chunk_files,
)


def back_up(repo: Repository, point_id: str, data: bytes, stream: bytes | None = None) -> None:
    result = backup_disk(repo, BytesReader(data), len(data), workers=2)
    writer = repo.begin_restore_point(point_id, vm_config={"name": "vm"})
    writer.add_disk(key="2000", label="Hard disk 1", index=result.index)
    if stream is not None:
        with open_stream_backup(writer, "postgresql/sales") as s:
            s.write(stream)
            s.finish()
    writer.commit()


def restored(repo: Repository, point_id: str) -> bytes:
    point = repo.read_restore_point(point_id)
    return b"".join(iter_disk(repo, repo.read_index(point.disks[0]), workers=2))


def copy_target(source: Repository, root: Path, encrypted: bool) -> Repository:
    return Repository.create_copy_target(
        FsBackend(root, durable=False),
        source,
        source_passphrase=PASSPHRASE if encrypted else None,
        passphrase="another passphrase" if encrypted else None,
        kdf=FAST_KDF,
    )


@pytest.mark.parametrize("encrypted", [False, True])
def test_copy_then_lose_the_source_and_restore_from_the_copy(tmp_path: Path, encrypted: bool) -> None:
    source = new_repo(tmp_path / "onsite", encrypted=encrypted)
    target = copy_target(source, tmp_path / "offsite", encrypted)
    first = disk_bytes(40 * CHUNK, seed=1)
    back_up(source, "rp-1", first, stream=random.Random(3).randbytes(300_000))

    stats = copy_restore_point(source, target, "rp-1", workers=3)
    assert stats.chunks > 0 and stats.chunks_copied == stats.chunks
    assert target.list_restore_points() == ["rp-1"]

    # A second point with a few chunks changed moves only those.
    second = bytearray(first)
    for at in (3, 17, 33):
        second[at * CHUNK : at * CHUNK + 100] = random.Random(at).randbytes(100)
    back_up(source, "rp-2", bytes(second))
    again = copy_restore_point(source, target, "rp-2", workers=3)
    assert again.chunks_copied == 3
    assert again.bytes_copied < stats.bytes_copied / 5

    shutil.rmtree(tmp_path / "onsite")  # the onsite repository is lost
    reopened = Repository.open(
        FsBackend(tmp_path / "offsite"), passphrase="another passphrase" if encrypted else None
    )
    assert restored(reopened, "rp-1") == first
    assert restored(reopened, "rp-2") == bytes(second)
    stream = reopened.read_restore_point("rp-1").stream("postgresql/sales")
    assert stream.size == 300_000


def test_the_manifest_goes_last_and_a_retry_finishes(tmp_path: Path) -> None:
    source = new_repo(tmp_path / "onsite")
    data = disk_bytes(30 * CHUNK, seed=2, kinds="r")

    class FailingBackend(FsBackend):
        puts = 0

        def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
            FailingBackend.puts += 1
            if FailingBackend.puts == 12:
                raise OSError("link down")
            super().put(key, data)

    back_up(source, "rp-1", data)
    target_root = tmp_path / "offsite"
    copy_target(source, target_root, encrypted=False)
    flaky = Repository.open(FailingBackend(target_root, durable=False))
    with pytest.raises(OSError, match="link down"):
        copy_restore_point(source, flaky, "rp-1", workers=1)
    with pytest.raises(RestorePointNotFound):
        flaky.read_restore_point("rp-1")  # nothing restorable-looking after a broken copy
    done = copy_restore_point(source, flaky, "rp-1", workers=2)
    assert 0 < done.chunks_copied < done.chunks  # what the first attempt sent is not sent again
    assert restored(flaky, "rp-1") == data


def test_damage_is_found_at_the_source_and_not_copied(tmp_path: Path) -> None:
    source = new_repo(tmp_path / "onsite", encrypted=True)
    target = copy_target(source, tmp_path / "offsite", encrypted=True)
    back_up(source, "rp-1", disk_bytes(10 * CHUNK, seed=4, kinds="r"))
    victim = stored_chunk_files(tmp_path / "onsite")[3]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    victim.write_bytes(bytes(raw))
    with pytest.raises(ChunkDamaged):
        copy_restore_point(source, target, "rp-1", workers=2)
    assert target.list_restore_points() == []


def test_only_a_repository_sharing_the_keys_is_a_copy_target(tmp_path: Path) -> None:
    source = new_repo(tmp_path / "onsite", encrypted=True)
    back_up(source, "rp-1", disk_bytes(4 * CHUNK))
    stranger = new_repo(tmp_path / "other", encrypted=True)
    with pytest.raises(RepositoryError, match="does not share the source's keys"):
        copy_restore_point(source, stranger, "rp-1")
    with pytest.raises(RepositoryError):
        Repository.create_copy_target(FsBackend(tmp_path / "x"), new_repo(tmp_path / "plain"), passphrase="p")


class GcBetweenCheckAndTouch(FsBackend):
    """A real filesystem backend that deletes one chunk right after reporting it present, as the
    target's garbage collection could between a copy's existence check and its touch (an
    interleaving no test can time, hence made to happen here)."""

    def __init__(self, root: Path, victim: str) -> None:
        super().__init__(root, durable=False)
        self.victim = victim

    def exists_many(self, keys: Iterable[str]) -> set[str]:
        present = super().exists_many(keys)
        if self.victim in present:
            self.delete(self.victim)
        return present


def test_a_chunk_the_target_lost_after_the_check_is_copied_again(tmp_path: Path) -> None:
    source = new_repo(tmp_path / "onsite")
    target = copy_target(source, tmp_path / "offsite", encrypted=False)
    data = disk_bytes(12 * CHUNK, seed=5)
    back_up(source, "rp-1", data)
    copy_restore_point(source, target, "rp-1", workers=2)
    target.delete_restore_point("rp-1")  # pruned offsite: its chunks are garbage now
    victim = chunk_key(next(iter(target.chunk_ids())))

    racing = Repository.open(GcBetweenCheckAndTouch(tmp_path / "offsite", victim))
    stats = copy_restore_point(source, racing, "rp-1", workers=2)
    assert stats.chunks_copied == 1  # the one the collection took; the others were touched
    assert verify(racing).ok
    assert restored(racing, "rp-1") == data
