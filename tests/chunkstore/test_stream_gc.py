"""GC and verify with streams: stream chunks are marked, freed only once unreferenced and old, orphan
segments are swept, a stream backup running during a GC loses nothing, verify names damaged streams."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import app.chunkstore.fs as fs_module
from app.chunkstore import (
    AffectedStream,
    Repository,
    StreamRecord,
    backup_disk,
    backup_stream,
    gc,
    open_stream_backup,
    verify,
)
from app.chunkstore.ids import chunk_key
from tests.chunkstore.conftest import (
    CHUNK,
    SMALL_CDC,
    BytesReader,
    disk_bytes,
    index_keys,
    new_repo,
    read_stream,
    stored_chunk_files,
)

LATER = datetime.now(UTC) + timedelta(days=2)
KiB = 1 << 10
MiB = 1 << 20


def _stream_ids(repo: Repository, record: StreamRecord) -> set[bytes]:
    return {cid for segment in record.segments for cid, _ in repo.read_stream_segment(segment)}


def _age(paths: list[Path], days: int = 2) -> None:
    then = (datetime.now(UTC) - timedelta(days=days)).timestamp()
    for path in paths:
        os.utime(path, (then, then))


def test_stream_chunks_survive_gc(tmp_path: Path, repo: Repository) -> None:
    root = tmp_path / "repo"  # where the repo fixture lives
    data = disk_bytes(300 * KiB, seed=1, kinds="rt")
    disk = disk_bytes(3 * CHUNK, seed=2)
    writer = repo.begin_restore_point("rp-1", vm_config={})
    index = backup_disk(repo, BytesReader(disk), len(disk)).index
    writer.add_disk(key="2000", label="Hard disk 1", index=index)
    backup_stream(repo, writer, "db", [data], params=SMALL_CDC, workers=2, segment_entries=3)
    writer.commit()
    before = stored_chunk_files(root)

    report = gc(repo, grace=timedelta(0), now=LATER)  # everything unreferenced would go
    assert report.chunks_deleted == 0 and report.indexes_deleted == 0
    assert (report.restore_points, report.streams) == (1, 1)
    assert report.chunks_referenced == len(before)
    assert stored_chunk_files(root) == before
    assert read_stream(repo, "rp-1", "db") == data


def test_a_pruned_points_stream_chunks_are_freed_after_grace(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo = new_repo(root, encrypted=True)
    a = disk_bytes(400 * KiB, seed=3, kinds="r")
    b = a[: 200 * KiB] + disk_bytes(200 * KiB, seed=4, kinds="r")  # shares its first half with a
    for rp, data in (("rp-a", a), ("rp-b", b)):
        writer = repo.begin_restore_point(rp, vm_config={})
        backup_stream(repo, writer, "db", [data], params=SMALL_CDC, workers=2)
        writer.commit()
    only_a = _stream_ids(repo, repo.read_restore_point("rp-a").stream("db")) - _stream_ids(
        repo, repo.read_restore_point("rp-b").stream("db")
    )
    assert only_a
    repo.delete_restore_point("rp-a")
    assert index_keys(root, "indexes/rp-a") == set()

    young = gc(repo, grace=timedelta(hours=1))
    assert young.chunks_deleted == 0 and young.chunks_kept_young == len(only_a)
    old = gc(repo, grace=timedelta(hours=1), now=LATER)
    assert old.chunks_deleted == len(only_a)
    assert not any((root / chunk_key(c)).exists() for c in only_a)
    assert read_stream(repo, "rp-b", "db") == b


def test_orphan_segments_are_swept_after_grace(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo = new_repo(root)
    good = disk_bytes(100 * KiB, seed=5)

    def failing_dump() -> Iterator[bytes]:
        yield random.Random(6).randbytes(9 * MiB)  # past one chunker window: segments are written
        raise OSError("dump failed")

    writer = repo.begin_restore_point("rp-1", vm_config={})
    backup_stream(repo, writer, "good", [good], params=SMALL_CDC, workers=2)
    with pytest.raises(OSError, match="dump failed"):
        backup_stream(repo, writer, "bad", failing_dump(), params=SMALL_CDC, workers=2, segment_entries=64)
    point = writer.commit()
    # A point that never committed, with a finished stream: all its objects are orphans.
    crashed = repo.begin_restore_point("rp-crashed", vm_config={})
    backup_stream(repo, crashed, "db", [disk_bytes(50 * KiB, seed=7)], params=SMALL_CDC)

    referenced = {s.key for s in point.streams[0].segments}
    orphans = index_keys(root, "indexes/rp-1") - referenced
    assert orphans
    assert gc(repo, grace=timedelta(hours=1)).indexes_deleted == 0  # young: could be a running backup

    report = gc(repo, grace=timedelta(hours=1), now=LATER)
    assert report.indexes_deleted == len(orphans) + 1
    assert index_keys(root, "indexes/rp-1") == referenced
    assert index_keys(root, "indexes/rp-crashed") == set()
    assert report.chunks_deleted > 0  # the failed stream's chunks went with them
    assert read_stream(repo, "rp-1", "good") == good
    assert verify(repo).ok


def test_a_stream_backup_reusing_old_orphan_chunks_keeps_them_through_a_concurrent_gc(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo = new_repo(root)
    data = disk_bytes(400 * KiB, seed=8, kinds="r")
    crashed = repo.begin_restore_point("crashed", vm_config={})
    backup_stream(repo, crashed, "db", [data], params=SMALL_CDC, workers=2)  # its chunks are orphans...
    _age(stored_chunk_files(root))  # ...and old enough to be swept

    again = Repository.open(repo.backend)  # a new process: nothing known present
    writer = again.begin_restore_point("new", vm_config={})
    result = backup_stream(again, writer, "db", [data], params=SMALL_CDC, workers=2)
    assert result.stats.chunks_new == 0  # found by the dedup check, which touched them
    report = gc(again, grace=timedelta(hours=1))  # before the commit: nothing references them yet
    assert report.chunks_deleted == 0
    writer.commit()
    assert read_stream(again, "new", "db") == data


def test_gc_in_the_middle_of_a_stream_backup_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo = new_repo(root, encrypted=True)
    old_point = disk_bytes(200 * KiB, seed=9, kinds="r")
    writer = repo.begin_restore_point("old", vm_config={})
    backup_stream(repo, writer, "db", [old_point], params=SMALL_CDC, workers=2)
    writer.commit()
    old_ids = _stream_ids(repo, repo.read_restore_point("old").stream("db"))
    _age(stored_chunk_files(root))
    repo.delete_restore_point("old")  # pruned: its chunks are garbage, unless the new backup reuses them

    data = old_point + random.Random(10).randbytes(12 * MiB)  # more than a chunker window
    again = Repository.open(repo.backend, passphrase="correct horse battery staple")
    writer = again.begin_restore_point("new", vm_config={})
    with open_stream_backup(writer, "db", params=SMALL_CDC, workers=2, segment_entries=64) as backup:
        backup.write(data[: 9 * MiB])  # one window cut: chunks stored or touched, segments written
        assert backup.stats.chunks_total > 0 and index_keys(root, "indexes/new")
        before = set(stored_chunk_files(root))
        report = gc(again, grace=timedelta(hours=1))
        assert report.indexes_deleted == 0  # the running backup's segments are young
        freed = {str(path.relative_to(root)) for path in before - set(stored_chunk_files(root))}
        backup.write(data[9 * MiB :])
        backup.finish()
    writer.commit()
    new_ids = _stream_ids(again, again.read_restore_point("new").stream("db"))
    # The old stream's last chunk was cut at its end, where the longer new stream does not cut: only
    # chunks like that, which the new stream does not reference, may have gone.
    assert report.chunks_deleted == len(freed) < len(old_ids)
    assert not freed & {chunk_key(c) for c in new_ids}
    assert new_ids & old_ids  # reused, touched by the dedup check, kept
    assert read_stream(again, "new", "db") == data
    assert verify(again).ok


# -- verify ---------------------------------------------------------------------------------------------


def test_verify_names_the_stream_of_a_damaged_chunk(tmp_path: Path, repo: Repository) -> None:
    root = tmp_path / "repo"  # where the repo fixture lives
    shared = disk_bytes(200 * KiB, seed=11, kinds="r")
    disk = disk_bytes(3 * CHUNK, seed=12)
    writer = repo.begin_restore_point("rp-1", vm_config={})
    index = backup_disk(repo, BytesReader(disk), len(disk)).index
    writer.add_disk(key="2000", label="Hard disk 1", index=index)
    backup_stream(repo, writer, "postgresql/sales", [shared], params=SMALL_CDC, workers=2, segment_entries=4)
    writer.commit()
    writer = repo.begin_restore_point("rp-2", vm_config={})
    backup_stream(repo, writer, "copy", [shared], params=SMALL_CDC, workers=2)
    writer.commit()
    clean = verify(repo, workers=2)
    assert clean.ok and (clean.restore_points, clean.disks, clean.streams) == (2, 1, 2)

    record = repo.read_restore_point("rp-1").stream("postgresql/sales")
    victim = sorted(_stream_ids(repo, record))[0]
    blob = bytearray((root / chunk_key(victim)).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (root / chunk_key(victim)).write_bytes(bytes(blob))
    report = verify(repo, workers=2)
    assert not report.ok
    [problem] = report.damaged
    assert problem.chunk_id == victim and problem.kind == "damaged"
    assert problem.affected == ()  # no disk holds it
    assert problem.streams == (
        AffectedStream("postgresql/sales", restore_point_id="rp-1"),
        AffectedStream("copy", restore_point_id="rp-2"),
    )
    assert problem.restore_point_ids == ("rp-1", "rp-2") and problem.export_ids == ()
    assert report.affected_restore_points == ["rp-1", "rp-2"]

    (root / record.segments[1].key).write_bytes(b"tampered")
    (root / chunk_key(victim)).unlink()
    report = verify(repo, workers=2)
    assert [p.chunk_id for p in report.missing] == [victim]
    assert report.streams == 1  # the stream with the damaged segment is not counted as read
    [message] = report.damaged_objects
    assert record.segments[1].key in message and "stream 'postgresql/sales'" in message


def test_a_collection_puts_back_what_an_interrupted_sweep_hid(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep stopped between moving a chunk aside and its last look (the chunk was old and
    unreferenced when it looked; a backup touched it and now references it): the next collection
    puts it back before it marks, and the point reads back whole."""
    root = tmp_path / "repo"
    disk = disk_bytes(3 * CHUNK, seed=7)
    writer = repo.begin_restore_point("rp-1", vm_config={})
    writer.add_disk(
        key="2000", label="Hard disk 1", index=backup_disk(repo, BytesReader(disk), len(disk)).index
    )
    writer.commit()
    victim = stored_chunk_files(root)[0]
    aside = victim.with_name(f".gc-{'0' * 16}-{victim.name}")  # the name the sweep gives it
    victim.rename(aside)
    assert verify(repo).affected_restore_points == ["rp-1"]

    monkeypatch.setattr(fs_module, "SWEEP_SETTLED_S", 0.0)  # the sweep stopped long ago
    report = gc(repo, grace=timedelta(0), now=LATER)
    assert report.sweeps_recovered == 1 and report.chunks_deleted == 0
    assert victim.is_file() and not aside.exists()
    assert verify(repo).ok
