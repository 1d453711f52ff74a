"""Exports: restore outputs kept for download. Write once, invisible until committed, listed with their
creation time, read with the verified stream reader, deleted, kept alive by GC, covered by verify, and
never mistaken for restore points."""

from __future__ import annotations

import io
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.chunkstore import (
    Export,
    ExportExists,
    ExportNotFound,
    ObjectDamaged,
    Repository,
    RepositoryError,
    RestorePoint,
    StreamNotFound,
    StreamReader,
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


def _export(repo: Repository, export_id: str, streams: dict[str, bytes], **kwargs: object) -> None:
    writer = repo.begin_export(export_id, **kwargs)  # type: ignore[arg-type]
    for name, data in streams.items():
        backup_stream(repo, writer, name, [data], params=SMALL_CDC, workers=2)
    writer.commit()


def test_export_lifecycle(tmp_path: Path, repo: Repository) -> None:
    root = tmp_path / "repo"
    archive = disk_bytes(300 * KiB, seed=1, kinds="rt")
    listing = b"etc/hosts\netc/fstab\n"
    writer = repo.begin_export("exp-1", metadata={"tenant": "acme", "requested_by": "ops@acme"})
    backup_stream(repo, writer, "files.tar", [archive], params=SMALL_CDC, workers=2, segment_entries=4)
    backup_stream(repo, writer, "files.txt", [listing], params=SMALL_CDC)
    # Invisible until committed, though its segments are written.
    assert repo.list_exports() == []
    assert index_keys(root, "export-indexes/exp-1")
    with pytest.raises(ExportNotFound):
        repo.read_export("exp-1")
    export = writer.commit()
    with pytest.raises(RepositoryError, match="already committed"):
        writer.commit()

    [listed] = repo.list_exports()
    assert listed == export == repo.read_export("exp-1")
    assert listed.id == "exp-1" and listed.metadata == {"tenant": "acme", "requested_by": "ops@acme"}
    assert listed.created_at.tzinfo is not None
    assert abs(listed.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert [s.name for s in listed.streams] == ["files.tar", "files.txt"]
    assert listed.size == len(archive) + len(listing)
    assert read_stream(repo, listed, "files.tar") == archive
    with StreamReader(repo, listed, "files.txt") as reader:
        assert reader.read() == listing
    with pytest.raises(ExportExists):
        repo.begin_export("exp-1")

    repo.delete_export("exp-1")
    assert repo.list_exports() == []
    assert index_keys(root, "export-indexes/exp-1") == set()
    with pytest.raises(ExportNotFound):
        repo.read_export("exp-1")
    with pytest.raises(ExportNotFound):
        repo.delete_export("exp-1")


def test_exports_are_listed_oldest_first(repo: Repository) -> None:
    now = datetime.now(UTC)
    _export(repo, "b", {"x": b"1"}, created_at=now - timedelta(hours=1))
    _export(repo, "a", {"x": b"2"}, created_at=now)
    _export(repo, "c", {"x": b"3"}, created_at=now - timedelta(days=1))
    assert [e.id for e in repo.list_exports()] == ["c", "b", "a"]


def test_exports_are_never_restore_points(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo = new_repo(root, encrypted=True)
    disk = disk_bytes(2 * CHUNK, seed=2)
    writer = repo.begin_restore_point("same-id", vm_config={"name": "vm"})
    writer.add_disk(
        key="2000", label="Hard disk 1", index=backup_disk(repo, BytesReader(disk), len(disk)).index
    )
    backup_stream(repo, writer, "files.tar", [b"from the restore point"], params=SMALL_CDC)
    writer.commit()
    _export(repo, "same-id", {"files.tar": b"from the export"})

    assert repo.list_restore_points() == ["same-id"]
    assert [e.id for e in repo.list_exports()] == ["same-id"]
    assert read_stream(repo, "same-id", "files.tar") == b"from the restore point"  # an id means a point
    assert read_stream(repo, repo.read_export("same-id"), "files.tar") == b"from the export"
    keys = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert {k for k in keys if k.startswith(("exports/", "export-indexes/"))} == {
        "exports/same-id",
        "export-indexes/same-id/s0-0",
    }
    assert not any(k.startswith(("restore-points/", "indexes/")) and "export" in k for k in keys)
    # An export's manifest is no restore point manifest, even moved where one would be.
    (root / "restore-points" / "other").write_bytes((root / "exports" / "same-id").read_bytes())
    with pytest.raises(ObjectDamaged):
        repo.read_restore_point("other")
    (root / "restore-points" / "other").unlink()

    repo.delete_restore_point("same-id")
    assert read_stream(repo, repo.read_export("same-id"), "files.tar") == b"from the export"
    writer = repo.begin_restore_point("same-id", vm_config={})
    backup_stream(repo, writer, "files.tar", [b"again"], params=SMALL_CDC)
    writer.commit()
    repo.delete_export("same-id")
    assert read_stream(repo, "same-id", "files.tar") == b"again"


def test_export_commit_needs_finished_streams(repo: Repository) -> None:
    writer = repo.begin_export("exp-1")
    with pytest.raises(RepositoryError, match="holds no stream"):
        writer.commit()
    backup = open_stream_backup(writer, "files.tar", params=SMALL_CDC)
    with tarfile.open(fileobj=backup, mode="w|") as tar:  # type: ignore[call-overload]
        info = tarfile.TarInfo("etc/hosts")
        info.size = 9
        tar.addfile(info, io.BytesIO(b"127.0.0.1"))
    with pytest.raises(RepositoryError, match="still being written"):
        writer.commit()
    backup.finish()
    export = writer.commit()
    with StreamReader(repo, export, "files.tar") as reader, tarfile.open(fileobj=reader, mode="r|") as tar:
        member = tar.next()
        assert member is not None and member.name == "etc/hosts"
        assert tar.extractfile(member).read() == b"127.0.0.1"  # type: ignore[union-attr]
    with pytest.raises(StreamNotFound) as info:
        StreamReader(repo, export, "nope")
    assert info.value.kind == "export" and info.value.restore_point_id is None
    assert "export 'exp-1' has no stream 'nope'" in str(info.value)


def test_export_and_restore_point_manifests_cannot_be_read_as_each_other(repo: Repository) -> None:
    _export(repo, "exp-1", {"files.tar": b"data"})
    export = repo.read_export("exp-1")
    point = RestorePoint(id="exp-1", created_at=export.created_at, vm_config={}, streams=export.streams)
    assert Export.from_json(export.to_json()) == export
    with pytest.raises(ValueError, match="not an export"):
        Export.from_json(point.to_json())
    with pytest.raises(KeyError):  # no vm_config, no disks: read_restore_point reports ObjectDamaged
        RestorePoint.from_json(export.to_json())


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "x" * 200, "with space"])
def test_export_ids_are_validated(repo: Repository, bad: str) -> None:
    with pytest.raises(ValueError, match="export id"):
        repo.begin_export(bad)


def test_gc_keeps_an_exports_chunks_until_it_is_deleted(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo = new_repo(root)
    _export(repo, "exp-1", {"files.tar": disk_bytes(200 * KiB, seed=3, kinds="r")})
    chunks = stored_chunk_files(root)
    report = gc(repo, grace=timedelta(0), now=LATER)
    assert report.chunks_deleted == 0 and report.indexes_deleted == 0
    assert (report.exports, report.restore_points, report.streams) == (1, 0, 1)
    assert report.chunks_referenced == len(chunks)

    repo.delete_export("exp-1")
    assert gc(repo, grace=timedelta(hours=1)).chunks_deleted == 0  # young
    report = gc(repo, grace=timedelta(hours=1), now=LATER)
    assert report.chunks_deleted == len(chunks)
    assert stored_chunk_files(root) == []


def test_gc_sweeps_the_segments_of_an_export_never_committed(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo = new_repo(root)
    writer = repo.begin_export("abandoned")
    backup_stream(repo, writer, "files.tar", [disk_bytes(100 * KiB, seed=4)], params=SMALL_CDC)
    _export(repo, "kept", {"files.tar": b"kept"})
    assert gc(repo, grace=timedelta(hours=1)).indexes_deleted == 0
    report = gc(repo, grace=timedelta(hours=1), now=LATER)
    assert report.indexes_deleted == 1
    assert index_keys(root, "export-indexes/abandoned") == set()
    assert read_stream(repo, repo.read_export("kept"), "files.tar") == b"kept"


@pytest.mark.parametrize("encrypted", [False, True])
def test_verify_covers_exports(tmp_path: Path, encrypted: bool) -> None:
    root = tmp_path / "r"
    repo = new_repo(root, encrypted=encrypted)
    data = disk_bytes(200 * KiB, seed=5, kinds="r")
    _export(repo, "exp-1", {"files.tar": data})
    clean = verify(repo, workers=2)
    assert clean.ok and (clean.exports, clean.streams, clean.restore_points) == (1, 1, 0)

    export = repo.read_export("exp-1")
    victim = next(iter(repo.read_stream_segment(export.streams[0].segments[0])))[0]
    blob = bytearray((root / chunk_key(victim)).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (root / chunk_key(victim)).write_bytes(bytes(blob))
    report = verify(repo, workers=2)
    [problem] = report.damaged
    assert problem.chunk_id == victim
    assert problem.export_ids == ("exp-1",) and problem.restore_point_ids == ()
    assert problem.streams[0].stream_name == "files.tar"
    assert report.affected_exports == ["exp-1"] and report.affected_restore_points == []

    (root / "exports" / "exp-1").write_bytes(b"garbage")
    report = verify(repo, workers=2)
    assert report.exports == 0 and len(report.damaged_objects) == 1
    assert "exports/exp-1" in report.damaged_objects[0]
    with pytest.raises(ObjectDamaged):
        repo.list_exports()
    repo.delete_export("exp-1")  # a damaged export can still be removed by its id
    assert verify(repo).ok
