"""Memory stays bounded by the pipeline window, not by the disk size."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

from app.chunkstore import backup_disk, iter_disk
from tests.chunkstore.conftest import new_repo

MiB = 1 << 20


class SyntheticDisk:
    """A 512 MiB disk generated on the fly: ~1 MiB in 8 non-zero, the rest sparse. Never held whole."""

    def __init__(self, size: int) -> None:
        self.size = size

    def read_at(self, offset: int, length: int) -> bytes:
        if (offset // MiB) % 8 == 3:
            return random.Random(offset).randbytes(length)
        return bytes(length)


def test_backup_and_restore_memory_is_bounded(tmp_path: Path) -> None:
    size = 512 * MiB
    repo = new_repo(tmp_path / "r", chunk_size=MiB)
    disk = SyntheticDisk(size)
    tracemalloc.start()
    try:
        result = backup_disk(repo, disk, size, workers=4)
        _, backup_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total = 0
        for piece in iter_disk(repo, result.index, workers=4):
            total += len(piece)
        _, restore_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.stats.chunks_zero == 448
    assert result.stats.chunks_new == 64
    assert total == size
    # Window of 16 chunks (plaintext) plus codec output: tens of MiB at most, for a 512 MiB disk.
    print(f"peaks: backup {backup_peak / MiB:.1f} MiB, restore {restore_peak / MiB:.1f} MiB")
    assert backup_peak < 48 * MiB, backup_peak
    assert restore_peak < 48 * MiB, restore_peak
