"""Backup and restore of disks: byte-exact round trips, dedup, the CBT path, sparse chunks, cancel."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest

from app.chunkstore import (
    BackupCancelled,
    BackupStats,
    DiskIndex,
    FileReader,
    Repository,
    backup_disk,
    iter_disk,
)
from app.chunkstore.extents import chunk_ranges, in_ranges
from app.chunkstore.ids import ZERO_ID
from app.chunkstore.restore import repeated_ids
from tests.chunkstore.conftest import CHUNK, BytesReader, disk_bytes, new_repo, stored_chunk_files

SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 12345]


def restore(repo: Repository, index: DiskIndex, workers: int = 3) -> bytes:
    return b"".join(iter_disk(repo, index, workers=workers))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kinds", ["r", "z", "t", "zrt"])
def test_roundtrip_byte_exact(repo: Repository, size: int, kinds: str) -> None:
    data = disk_bytes(size, kinds=kinds, seed=size)
    result = backup_disk(repo, BytesReader(data), size, workers=3)
    assert result.index.disk_size == size
    assert len(result.index) == -(-size // CHUNK)
    assert restore(repo, result.index) == data
    pieces = list(iter_disk(repo, result.index))
    assert all(len(p) == CHUNK for p in pieces[:-1])
    stats = result.stats
    assert stats.chunks_total == len(result.index)
    assert (
        stats.chunks_done == stats.chunks_total == stats.chunks_zero + stats.chunks_new + stats.chunks_reused
    )
    assert stats.bytes_read == size


def test_roundtrip_through_restore_point(repo: Repository) -> None:
    data = disk_bytes(7 * CHUNK + 99, seed=7)
    result = backup_disk(repo, BytesReader(data), len(data))
    writer = repo.begin_restore_point("rp-1", vm_config={"name": "vm1", "cpus": 2}, metadata={"job": 42})
    writer.add_disk(key="2000", label="Hard disk 1", index=result.index, change_id="52 de 1/7")
    writer.commit()
    point = repo.read_restore_point("rp-1")
    assert point.vm_config == {"name": "vm1", "cpus": 2}
    assert point.metadata == {"job": 42}
    disk = point.disk("2000")
    assert (disk.label, disk.size, disk.chunk_size, disk.change_id) == (
        "Hard disk 1",
        len(data),
        CHUNK,
        "52 de 1/7",
    )
    index = repo.read_index(disk)
    assert index == result.index
    assert restore(repo, index) == data


def test_file_reader_source(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    data = disk_bytes(4 * CHUNK + 5, seed=3)
    path = tmp_path / "disk.img"
    path.write_bytes(data)
    with FileReader(path) as reader:
        assert reader.size == len(data)
        result = backup_disk(repo, reader, reader.size, workers=2)
    assert restore(repo, result.index) == data


def test_zero_chunks_are_not_stored(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    data = bytes(3 * CHUNK) + b"\x01" + bytes(CHUNK - 1) + bytes(2 * CHUNK + 100)
    result = backup_disk(repo, BytesReader(data), len(data))
    assert result.stats.chunks_zero == 6
    assert result.stats.chunks_new == 1
    assert len(stored_chunk_files(tmp_path / "r")) == 1
    assert [result.index.is_zero(i) for i in range(7)] == [True, True, True, False, True, True, True]
    assert restore(repo, result.index) == data


def test_dedup_across_disks_and_vms(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    base = disk_bytes(12 * CHUNK, kinds="rt", seed=11)
    vm1 = base
    vm2 = base[: 4 * CHUNK] + os.urandom(CHUNK) + base[5 * CHUNK :]  # one chunk differs
    vm3 = base[6 * CHUNK :] + base[: 6 * CHUNK]  # same chunks, other order
    first = backup_disk(repo, BytesReader(vm1), len(vm1))
    second = backup_disk(repo, BytesReader(vm2), len(vm2))
    third = backup_disk(repo, BytesReader(vm3), len(vm3))
    unique = first.index.unique_ids() | second.index.unique_ids() | third.index.unique_ids()
    assert len(stored_chunk_files(tmp_path / "r")) == len(unique) == 13
    assert second.stats.chunks_new == 1
    assert third.stats.chunks_new == 0
    assert third.stats.chunks_reused == 12
    # A second process (fresh cache) dedups against the store, not just its own memory.
    again = Repository.open(repo.backend)
    fourth = backup_disk(again, BytesReader(vm1), len(vm1))
    assert fourth.stats.chunks_new == 0
    assert fourth.stats.bytes_stored == 0


def test_duplicate_chunks_within_one_disk_stored_once(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    block = os.urandom(CHUNK)
    data = block * 10 + os.urandom(CHUNK) + block * 5
    result = backup_disk(repo, BytesReader(data), len(data), workers=4)
    assert result.stats.chunks_new == 2
    assert len(stored_chunk_files(tmp_path / "r")) == 2
    assert restore(repo, result.index) == data


def _rewrite(data: bytes, extents: list[tuple[int, int]], seed: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    for offset, length in extents:
        out[offset : offset + length] = rng.randbytes(length)
    return bytes(out)


def test_cbt_path_reads_only_changed_chunks_and_matches_full_read(repo: Repository) -> None:
    size = 40 * CHUNK + 777
    day1 = disk_bytes(size, seed=5)
    full1 = backup_disk(repo, BytesReader(day1), size)
    extents = [(3 * CHUNK + 10, 4096), (10 * CHUNK - 100, 200), (20 * CHUNK, 2 * CHUNK), (size - 5, 5)]
    day2 = _rewrite(day1, extents, seed=9)

    reader = BytesReader(day2)
    cbt = backup_disk(repo, reader, size, changed_extents=extents, previous_index=full1.index)
    expected_chunks = {3, 9, 10, 20, 21, 40}
    assert {offset // CHUNK for offset, _ in reader.calls} == expected_chunks
    assert len(reader.calls) == len(expected_chunks)
    assert cbt.stats.chunks_read == len(expected_chunks)
    assert cbt.stats.bytes_read == sum(length for _, length in reader.calls)

    full2 = backup_disk(repo, BytesReader(day2), size)
    assert cbt.index == full2.index
    assert restore(repo, cbt.index) == day2
    assert cbt.stats.chunks_done == cbt.stats.chunks_total


def test_whole_disk_fallback_with_previous_index(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    day1 = disk_bytes(30 * CHUNK, kinds="rt", seed=8)
    first = backup_disk(repo, BytesReader(day1), len(day1))
    day2 = _rewrite(day1, [(7 * CHUNK + 1, 10)], seed=1)
    calls: list[list[bytes]] = []
    original = repo.missing

    def spy(chunk_ids: Iterable[bytes]) -> set[bytes]:
        batch = list(chunk_ids)
        calls.append(batch)
        return original(batch)

    repo.missing = spy  # type: ignore[method-assign]
    second = backup_disk(repo, BytesReader(day2), len(day2), previous_index=first.index)
    assert second.stats.chunks_read == 30
    assert second.stats.chunks_new == 1
    assert second.stats.chunks_reused == 29
    # Unchanged chunks are recognised by position: only the changed one was dedup-checked.
    assert sum(len(c) for c in calls) == 1
    assert restore(repo, second.index) == day2


def test_disk_grown_and_shrunk_with_cbt(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    day1 = disk_bytes(10 * CHUNK + 300, seed=2)
    first = backup_disk(repo, BytesReader(day1), len(day1))
    grown = day1 + disk_bytes(3 * CHUNK, seed=3, kinds="r")
    reader = BytesReader(grown)
    second = backup_disk(repo, reader, len(grown), changed_extents=[], previous_index=first.index)
    assert restore(repo, second.index) == grown
    # The old partial last chunk and the new ones are read; the first ten are not.
    assert sorted({o // CHUNK for o, _ in reader.calls}) == [10, 11, 12, 13]
    shrunk = day1[: 6 * CHUNK + 5]
    third = backup_disk(
        repo, BytesReader(shrunk), len(shrunk), changed_extents=[], previous_index=first.index
    )
    assert restore(repo, third.index) == shrunk


def test_cbt_needs_previous_index(repo: Repository) -> None:
    with pytest.raises(ValueError, match="previous_index"):
        backup_disk(repo, BytesReader(b"x"), 1, changed_extents=[(0, 1)])


def test_chunk_ranges_and_in_ranges() -> None:
    ranges = chunk_ranges([(0, 1), (10, 5), (100, 300), (250, 10), (999, 50), (5000, 1)], 100, 1010)
    assert ranges == [(0, 4), (9, 11)]
    assert list(in_ranges(12, ranges)) == [True] * 4 + [False] * 5 + [True] * 2 + [False]


def test_progress_is_reported(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    data = disk_bytes(40 * CHUNK, seed=4)
    seen: list[BackupStats] = []
    backup_disk(repo, BytesReader(data), len(data), progress=seen.append, progress_interval=0.0)
    assert seen
    done = [s.chunks_done for s in seen]
    assert done == sorted(done)
    assert all(s.chunks_total == 40 for s in seen)


class SlowReader(BytesReader):
    def __init__(self, data: bytes, cancel_after: int, cancel: threading.Event) -> None:
        super().__init__(data)
        self.cancel_after = cancel_after
        self.cancel = cancel

    def read_at(self, offset: int, length: int) -> bytes:
        if len(self.calls) >= self.cancel_after:
            self.cancel.set()
        return super().read_at(offset, length)


def test_cancel_stops_promptly(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    data = disk_bytes(200 * CHUNK, kinds="r", seed=6)
    cancel = threading.Event()
    reader = SlowReader(data, 10, cancel)
    with pytest.raises(BackupCancelled):
        backup_disk(repo, reader, len(data), cancel=cancel, workers=2)
    assert len(reader.calls) < 40  # stopped within a window of the cancel, not at the end of the disk


def test_reader_error_propagates(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")

    class Broken(BytesReader):
        def read_at(self, offset: int, length: int) -> bytes:
            if offset >= 5 * CHUNK:
                raise ConnectionError("datastore went away")
            return super().read_at(offset, length)

    with pytest.raises(ConnectionError, match="went away"):
        backup_disk(repo, Broken(disk_bytes(50 * CHUNK, seed=1)), 50 * CHUNK)

    class Short(BytesReader):
        def read_at(self, offset: int, length: int) -> bytes:
            return super().read_at(offset, length)[:-1]

    with pytest.raises(OSError, match="short read"):
        backup_disk(repo, Short(disk_bytes(2 * CHUNK, kinds="r", seed=1)), 2 * CHUNK)


def test_restore_fetches_each_chunk_once(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    a, b, c = (os.urandom(CHUNK) for _ in range(3))
    data = a + b + a + bytes(CHUNK) + c + a + b + c * 3
    result = backup_disk(repo, BytesReader(data), len(data))
    fetched: list[bytes] = []
    original = repo.get_chunk

    def spy(chunk_id: bytes) -> bytes:
        fetched.append(chunk_id)
        return original(chunk_id)

    repo.get_chunk = spy  # type: ignore[method-assign]
    assert restore(repo, result.index, workers=2) == data
    assert sorted(fetched) == sorted({repo.chunk_id(a), repo.chunk_id(b), repo.chunk_id(c)})
    # With no room to hold repeated chunks they are fetched again: correct, just slower.
    fetched.clear()
    assert b"".join(iter_disk(repo, result.index, workers=2, hold_bytes=0)) == data
    assert len(fetched) > 3


def test_repeated_ids() -> None:
    ids = [os.urandom(32) for _ in range(5)]
    entries = [ids[0], ids[1], ZERO_ID, ids[0], ids[2], ZERO_ID, ids[0], ids[1], ids[3], ids[4]]
    index = DiskIndex(len(entries) * CHUNK, CHUNK, b"".join(entries))
    assert repeated_ids(index) == {ids[0]: 3, ids[1]: 2}


def test_closing_restore_early_stops_fetching(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    data = disk_bytes(60 * CHUNK, kinds="r", seed=12)
    result = backup_disk(repo, BytesReader(data), len(data))
    pieces = iter_disk(repo, result.index, workers=2)
    assert next(pieces) == data[:CHUNK]
    pieces.close()  # must return promptly and leave no thread running
    assert not [t for t in threading.enumerate() if t.name.startswith("chunkstore-restore")]
