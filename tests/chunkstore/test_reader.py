"""Random access into a restore point (DiskImageReader) against the source bytes."""

from __future__ import annotations

import io
import os
import random
import threading
from pathlib import Path

from app.chunkstore import DiskImageReader, Repository, backup_disk
from tests.chunkstore.conftest import CHUNK, BytesReader, disk_bytes, new_repo


def test_random_offsets_match_source(repo: Repository) -> None:
    size = 20 * CHUNK + 4321
    data = disk_bytes(size, seed=51)
    index = backup_disk(repo, BytesReader(data), size).index
    reader = DiskImageReader(repo, index, cache_bytes=4 * CHUNK)
    rng = random.Random(5)
    for _ in range(300):
        offset = rng.randrange(0, size + 10)
        length = rng.choice([0, 1, 512, 4096, CHUNK, 3 * CHUNK + 7, rng.randrange(0, 2 * CHUNK)])
        assert reader.read_at(offset, length) == data[offset : offset + length], (offset, length)
    assert reader.read_at(size - 3, 100) == data[-3:]
    assert reader.read_at(size + 5, 10) == b""


def test_file_like_interface(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    data = disk_bytes(6 * CHUNK + 11, seed=52)
    index = backup_disk(repo, BytesReader(data), len(data)).index
    f = DiskImageReader(repo, index)
    assert f.readable() and f.seekable()
    assert f.read(10) == data[:10]
    assert f.tell() == 10
    f.seek(CHUNK - 3)
    assert f.read(6) == data[CHUNK - 3 : CHUNK + 3]
    f.seek(-5, io.SEEK_END)
    assert f.read() == data[-5:]
    assert f.read(10) == b""
    f.seek(100)
    f.seek(50, io.SEEK_CUR)
    buf = bytearray(200)
    assert f.readinto(buf) == 200
    assert bytes(buf) == data[150:350]
    f.seek(0)
    assert io.BufferedReader(f, buffer_size=4096).read() == data


def test_cache_is_bounded_and_used(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    data = disk_bytes(10 * CHUNK, kinds="r", seed=53)
    index = backup_disk(repo, BytesReader(data), len(data)).index
    reader = DiskImageReader(repo, index, cache_bytes=2 * CHUNK)
    for _ in range(5):
        reader.read_at(0, 100)
        reader.read_at(CHUNK, 100)
    assert reader.fetches == 2
    for n in range(10):
        reader.read_at(n * CHUNK, 1)
    assert reader.fetches == 10  # chunks 0 and 1 were still cached
    assert reader._cached <= 2 * CHUNK
    reader.read_at(0, 1)  # evicted since
    assert reader.fetches == 11


def test_zero_regions_need_no_fetch(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    data = bytes(4 * CHUNK) + os.urandom(CHUNK)
    index = backup_disk(repo, BytesReader(data), len(data)).index
    reader = DiskImageReader(repo, index)
    assert reader.read_at(CHUNK + 5, 2 * CHUNK) == bytes(2 * CHUNK)
    assert reader.fetches == 0


def test_concurrent_read_at(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    data = disk_bytes(16 * CHUNK, seed=54)
    index = backup_disk(repo, BytesReader(data), len(data)).index
    reader = DiskImageReader(repo, index, cache_bytes=3 * CHUNK)
    errors: list[tuple[int, int]] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(100):
            offset, length = rng.randrange(len(data)), rng.randrange(3 * CHUNK)
            if reader.read_at(offset, length) != data[offset : offset + length]:
                errors.append((offset, length))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_restore_point_as_backup_source(tmp_path: Path) -> None:
    # DiskImageReader is a DiskReader: a restore point can be copied into another repository.
    src = new_repo(tmp_path / "a")
    dst = new_repo(tmp_path / "b", encrypted=True)
    data = disk_bytes(5 * CHUNK + 9, seed=55)
    index = backup_disk(src, BytesReader(data), len(data)).index
    copied = backup_disk(dst, DiskImageReader(src, index), len(data)).index
    assert DiskImageReader(dst, copied).read_at(0, len(data)) == data
