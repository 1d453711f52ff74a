"""Streams in restore points: byte-exact round trips (push and pull), dedup across backups, concurrent
streams, failures that release a stream, damage surfacing on read, and the manifest formats."""

from __future__ import annotations

import dataclasses
import io
import json
import random
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from app.chunkstore import (
    BackupCancelled,
    ChunkDamaged,
    ChunkMissing,
    ContentChunker,
    DiskRecord,
    ObjectDamaged,
    Repository,
    RepositoryError,
    RestorePoint,
    StreamDamaged,
    StreamNotFound,
    StreamReader,
    StreamRecord,
    backup_disk,
    backup_stream,
    iter_stream,
    open_stream_backup,
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
)

KiB = 1 << 10
MiB = 1 << 20
WINDOW = ContentChunker(SMALL_CDC).buffer_size  # bytes a stream backup holds before it cuts chunks


def _point_with(repo: Repository, rp: str, streams: dict[str, bytes], **kwargs: object) -> RestorePoint:
    writer = repo.begin_restore_point(rp, vm_config={})
    for name, data in streams.items():
        backup_stream(repo, writer, name, [data], params=SMALL_CDC, workers=2, **kwargs)  # type: ignore[arg-type]
    return writer.commit()


def _chunks_of(repo: Repository, record: StreamRecord) -> list[tuple[bytes, int]]:
    return [entry for segment in record.segments for entry in repo.read_stream_segment(segment)]


def test_push_in_odd_sizes_round_trip(repo: Repository) -> None:
    data = disk_bytes(700 * KiB, seed=5)
    writer = repo.begin_restore_point("rp-1", vm_config={"name": "db1"})
    backup = open_stream_backup(
        writer, "postgresql/sales", params=SMALL_CDC, workers=2, metadata={"engine": "postgresql"}
    )
    sizes = [1, 7, 4095, 65537, 100_003, 3, 250_000]
    pos = turn = 0
    while pos < len(data):
        piece = memoryview(data)[pos : pos + sizes[turn % len(sizes)]]
        assert backup.write(piece) == len(piece)
        pos += len(piece)
        turn += 1
    result = backup.finish(metadata={"rows": 3})
    point = writer.commit()

    record = point.stream("postgresql/sales")
    assert record == result.record
    assert record.size == len(data)
    assert record.metadata == {"engine": "postgresql", "rows": 3}
    assert record.chunker == SMALL_CDC.to_json()
    assert record.hash_algorithm == ("blake3-keyed" if repo.encrypted else "blake3")
    stats = result.stats
    assert stats.bytes_read == len(data)
    assert stats.chunks_total == stats.chunks_done == stats.chunks_new + stats.chunks_reused == record.chunks
    assert stats.chunks_zero == 0

    assert read_stream(repo, "rp-1", "postgresql/sales") == data
    with StreamReader(repo, "rp-1", "postgresql/sales", workers=2) as reader:
        assert reader.size == len(data)
        parts = []
        while piece := reader.read(10_000):
            parts.append(piece)
        assert b"".join(parts) == data
        assert reader.tell() == len(data)
    with pytest.raises(RepositoryError, match="finished"):
        backup.write(b"late")


def test_pull_from_a_file_object(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    data = disk_bytes(300 * KiB, seed=6)
    (tmp_path / "dump.sql").write_bytes(data)
    writer = repo.begin_restore_point("rp-1", vm_config={})
    with open(tmp_path / "dump.sql", "rb") as f:
        backup_stream(repo, writer, "dump", f, params=SMALL_CDC, workers=2)
    writer.commit()
    assert read_stream(repo, "rp-1", "dump") == data


def test_pull_from_a_subprocess_pipe(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r", encrypted=True)
    size = 3 * MiB + 17
    producer = (
        "import random, sys\n"
        f"data = random.Random(7).randbytes({size})\n"
        "for start in range(0, len(data), 50_000):\n"
        "    sys.stdout.buffer.write(data[start : start + 50_000]); sys.stdout.buffer.flush()\n"
    )
    writer = repo.begin_restore_point("rp-1", vm_config={})
    with subprocess.Popen([sys.executable, "-c", producer], stdout=subprocess.PIPE, bufsize=0) as proc:
        assert proc.stdout is not None
        result = backup_stream(repo, writer, "pipe", proc.stdout, params=SMALL_CDC, workers=2)
    assert proc.returncode == 0
    writer.commit()
    expected = random.Random(7).randbytes(size)
    assert result.record.size == size
    assert read_stream(repo, "rp-1", "pipe") == expected


def test_empty_stream_and_zero_stream(repo: Repository) -> None:
    zeros = bytes(5 * MiB)
    writer = repo.begin_restore_point("rp-1", vm_config={})
    empty = backup_stream(repo, writer, "empty", [], params=SMALL_CDC, workers=2)
    zero = backup_stream(repo, writer, "zeros", [zeros], params=SMALL_CDC, workers=2)
    point = writer.commit()
    assert empty.record.size == 0 and empty.record.chunks == 0 and len(empty.record.segments) == 1
    assert read_stream(repo, point, "empty") == b""
    assert StreamReader(repo, point, "empty").read() == b""
    # Zeros have no content-defined cut: every chunk is a maximum-size chunk, and the same one.
    assert zero.stats.chunks_total == len(zeros) // SMALL_CDC.max_size
    assert zero.stats.chunks_new == 1
    assert read_stream(repo, point, "zeros") == zeros


def test_stream_larger_than_one_index_segment(repo: Repository) -> None:
    data = disk_bytes(MiB, seed=8, kinds="rt")
    writer = repo.begin_restore_point("rp-1", vm_config={})
    result = backup_stream(repo, writer, "big", [data], params=SMALL_CDC, workers=2, segment_entries=4)
    writer.commit()
    segments = result.record.segments
    assert len(segments) == -(-result.record.chunks // 4) > 4
    assert all(s.chunks == 4 for s in segments[:-1]) and 1 <= segments[-1].chunks <= 4
    assert [s.key for s in segments] == [f"indexes/rp-1/s0-{n}" for n in range(len(segments))]
    assert sum(s.size for s in segments) == len(data)
    assert read_stream(repo, "rp-1", "big") == data


def test_second_backup_of_a_changed_stream_stores_few_new_bytes(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    first = disk_bytes(2 * MiB, seed=9, kinds="rt")
    changed = first[:MiB] + b"INSERT INTO sales VALUES (42);" + first[MiB : MiB + MiB // 2]
    changed += bytes([first[MiB + MiB // 2] ^ 1]) + first[MiB + MiB // 2 + 1 :]
    writer = repo.begin_restore_point("rp-1", vm_config={})
    one = backup_stream(repo, writer, "db", [first], params=SMALL_CDC, workers=2)
    writer.commit()
    fresh = Repository.open(repo.backend)  # another process: nothing known, every chunk asked for
    writer = fresh.begin_restore_point("rp-2", vm_config={})
    two = backup_stream(fresh, writer, "db", [changed], params=SMALL_CDC, workers=2)
    writer.commit()
    assert one.stats.chunks_new == one.stats.chunks_total - one.stats.chunks_reused
    # Two edits: a few chunks around each are new, every other chunk is found in the repository.
    assert two.stats.chunks_new <= 6, two.stats
    assert two.stats.bytes_new < len(changed) // 10, two.stats
    assert two.stats.chunks_reused >= two.stats.chunks_total - 6
    assert read_stream(repo, "rp-2", "db") == changed
    assert read_stream(repo, "rp-1", "db") == first


def test_streams_written_concurrently_into_one_restore_point(repo: Repository) -> None:
    datas = {f"db/{n}": disk_bytes(200 * KiB + n, seed=20 + n) for n in range(4)}
    datas["db/shared"] = datas["db/0"]  # the same content twice, at the same time
    writer = repo.begin_restore_point("rp-1", vm_config={})
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            backup_stream(repo, writer, name, [datas[name]], params=SMALL_CDC, workers=2)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(name,)) for name in datas]
    for t in threads:
        t.start()
    disk = disk_bytes(3 * CHUNK, seed=30)
    writer.add_disk(
        key="2000", label="Hard disk 1", index=backup_disk(repo, BytesReader(disk), len(disk)).index
    )
    for t in threads:
        t.join()
    assert errors == []
    point = writer.commit()
    assert sorted(s.name for s in point.streams) == sorted(datas)
    assert len({s.segments[0].key for s in point.streams}) == len(datas)  # each its own prefix
    for name, data in datas.items():
        assert read_stream(repo, point, name) == data


def test_a_failed_stream_is_released_and_the_point_commits_without_it(tmp_path: Path) -> None:
    root = tmp_path / "r"
    repo = new_repo(root)
    good = disk_bytes(100 * KiB, seed=40)

    def failing_dump() -> Iterator[bytes]:
        yield random.Random(41).randbytes(WINDOW + MiB)  # past one chunker window: segments get written
        raise OSError("pg_dump exited with status 1")

    writer = repo.begin_restore_point("rp-1", vm_config={})
    backup_stream(repo, writer, "good", [good], params=SMALL_CDC, workers=2)
    with pytest.raises(OSError, match="pg_dump"):
        backup_stream(repo, writer, "db", failing_dump(), params=SMALL_CDC, workers=2, segment_entries=64)
    assert [s.name for s in writer.streams] == ["good"]
    point = writer.commit()
    assert [s.name for s in point.streams] == ["good"]
    assert read_stream(repo, point, "good") == good
    # Its index segments stay behind as orphans (GC removes them after the grace period)...
    orphans = index_keys(root, "indexes/rp-1") - {s.key for s in point.streams[0].segments}
    assert orphans and all(k.startswith("indexes/rp-1/s1-") for k in orphans)


def test_a_released_name_can_be_written_again(repo: Repository) -> None:
    writer = repo.begin_restore_point("rp-1", vm_config={})

    def failing() -> Iterator[bytes]:
        yield b"partial"
        raise OSError("broken pipe")

    with pytest.raises(OSError, match="broken pipe"):
        backup_stream(repo, writer, "db", failing(), params=SMALL_CDC)
    retried = backup_stream(repo, writer, "db", [b"complete dump"], params=SMALL_CDC)
    assert retried.record.segments[0].key.startswith("indexes/rp-1/s1-")  # never the failed one's keys
    point = writer.commit()
    assert read_stream(repo, point, "db") == b"complete dump"


def test_commit_refuses_while_a_stream_is_open(repo: Repository) -> None:
    writer = repo.begin_restore_point("rp-1", vm_config={})
    backup = open_stream_backup(writer, "db", params=SMALL_CDC)
    backup.write(b"x" * 1000)
    with pytest.raises(RepositoryError, match="still being written"):
        writer.commit()
    assert repo.list_restore_points() == []
    with pytest.raises(ValueError, match="twice"):
        open_stream_backup(writer, "db")
    backup.finish()
    writer.commit()
    with pytest.raises(RepositoryError, match="already committed"):
        open_stream_backup(writer, "late")
    assert read_stream(repo, "rp-1", "db") == b"x" * 1000


def test_a_failed_store_abandons_the_stream(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    real_put = repo.put_chunk
    stored: list[bytes] = []

    def flaky_put(chunk_id: bytes, plaintext: bytes) -> int:
        if len(stored) >= 3:
            raise OSError("disk full")
        stored.append(chunk_id)
        return real_put(chunk_id, plaintext)

    repo.put_chunk = flaky_put  # type: ignore[method-assign]
    writer = repo.begin_restore_point("rp-1", vm_config={})
    backup = open_stream_backup(writer, "db", params=SMALL_CDC, workers=2, max_inflight_bytes=0)
    data = random.Random(50).randbytes(WINDOW)  # one window: its chunks are stored within write()
    backup.write(data[:-1])
    with pytest.raises(OSError, match="disk full"):
        backup.write(data[-1:])
    # The stream is abandoned, never finished into a record naming a chunk that was not stored.
    with pytest.raises(RepositoryError, match="aborted"):
        backup.write(b"more")
    with pytest.raises(RepositoryError, match="aborted"):
        backup.finish()
    assert writer.streams == ()
    writer.commit()  # no hang, no stream

    repo.put_chunk = real_put  # type: ignore[method-assign]
    stored.clear()
    writer = repo.begin_restore_point("rp-2", vm_config={})
    backup = open_stream_backup(writer, "db", params=SMALL_CDC, workers=2)
    backup.write(data[: 200 * KiB])
    repo.put_chunk = flaky_put  # type: ignore[method-assign]
    stored.extend([b"", b"", b""])  # every store fails from now on: finish() is where it shows
    with pytest.raises(OSError, match="disk full"):
        backup.finish()
    assert writer.streams == ()
    writer.commit()


def test_cancel_releases_the_stream(repo: Repository) -> None:
    cancel = threading.Event()
    writer = repo.begin_restore_point("rp-1", vm_config={})

    def dump() -> Iterator[bytes]:
        yield b"a" * 1000
        cancel.set()
        yield b"b" * 1000

    with pytest.raises(BackupCancelled):
        backup_stream(repo, writer, "db", dump(), params=SMALL_CDC, cancel=cancel)
    assert writer.commit().streams == ()


def test_tar_written_into_a_stream_and_read_back(repo: Repository) -> None:
    files = {f"etc/app/{n}.conf": disk_bytes(n * 3000 + 1, seed=n, kinds="t") for n in range(5)}
    writer = repo.begin_restore_point("rp-1", vm_config={})
    with open_stream_backup(writer, "files", params=SMALL_CDC, workers=2) as backup:
        with tarfile.open(fileobj=backup, mode="w|") as tar:  # type: ignore[call-overload]
            for name, content in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        backup.finish(metadata={"files": len(files)})
    point = writer.commit()
    with StreamReader(repo, point, "files") as reader, tarfile.open(fileobj=reader, mode="r|") as tar:
        restored = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    assert restored == files


# -- damage ---------------------------------------------------------------------------------------------


@pytest.fixture
def damaged_setup(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Repository, Path, bytes]:
    root = tmp_path / "r"
    repo = new_repo(root, encrypted=getattr(request, "param", False))
    data = disk_bytes(400 * KiB, seed=60, kinds="rt")
    _point_with(repo, "rp-1", {"db": data})
    return repo, root, data


def _flip(path: Path, at: int | None = None) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2 if at is None else at] ^= 0xFF
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("damaged_setup", [False, True], indirect=True, ids=["plain", "encrypted"])
def test_a_damaged_chunk_raises_chunk_damaged(damaged_setup: tuple[Repository, Path, bytes]) -> None:
    repo, root, _ = damaged_setup
    record = repo.read_restore_point("rp-1").stream("db")
    victim = _chunks_of(repo, record)[3][0]
    _flip(root / chunk_key(victim))
    with pytest.raises(ChunkDamaged) as info:
        read_stream(repo, "rp-1", "db")
    assert info.value.chunk_id == victim
    reader = StreamReader(repo, "rp-1", "db", workers=2)
    with pytest.raises(ChunkDamaged):
        reader.read()
    with pytest.raises(ChunkDamaged):  # again: a retry never sees a clean end of file
        reader.read(10)
    reader.close()


@pytest.mark.parametrize("damaged_setup", [False, True], indirect=True, ids=["plain", "encrypted"])
def test_a_missing_chunk_raises_chunk_missing(damaged_setup: tuple[Repository, Path, bytes]) -> None:
    repo, root, _ = damaged_setup
    victim = _chunks_of(repo, repo.read_restore_point("rp-1").stream("db"))[-1][0]
    (root / chunk_key(victim)).unlink()
    with pytest.raises(ChunkMissing) as info:
        read_stream(repo, "rp-1", "db")
    assert info.value.chunk_id == victim
    with pytest.raises(ChunkMissing), StreamReader(repo, "rp-1", "db") as reader:
        reader.read()


@pytest.mark.parametrize("damaged_setup", [False, True], indirect=True, ids=["plain", "encrypted"])
def test_a_tampered_segment_raises_object_damaged(damaged_setup: tuple[Repository, Path, bytes]) -> None:
    repo, root, _ = damaged_setup
    segment = repo.read_restore_point("rp-1").stream("db").segments[0]
    _flip(root / segment.key, at=-1)
    with pytest.raises(ObjectDamaged) as info:
        read_stream(repo, "rp-1", "db")
    assert info.value.key == segment.key
    with pytest.raises(ObjectDamaged), StreamReader(repo, "rp-1", "db") as reader:
        reader.read()


@pytest.mark.parametrize("damaged_setup", [False, True], indirect=True, ids=["plain", "encrypted"])
def test_a_whole_stream_hash_mismatch_raises_stream_damaged(
    damaged_setup: tuple[Repository, Path, bytes],
) -> None:
    repo, _, data = damaged_setup
    point = repo.read_restore_point("rp-1")
    wrong = dataclasses.replace(point.stream("db"), digest="00" * 32)
    repo.write_manifest(dataclasses.replace(point, id="rp-wrong", streams=(wrong,)))
    pieces: list[bytes] = []
    with pytest.raises(StreamDamaged, match="whole-stream hash"):
        pieces.extend(iter_stream(repo, "rp-wrong", "db"))
    assert b"".join(pieces) == data  # every chunk was good: only the end can tell
    with pytest.raises(StreamDamaged), StreamReader(repo, "rp-wrong", "db") as reader:
        reader.read()
    foreign = dataclasses.replace(point.stream("db"), hash_algorithm="sha256")
    repo.write_manifest(dataclasses.replace(point, id="rp-foreign", streams=(foreign,)))
    with pytest.raises(StreamDamaged, match="sha256"):
        iter_stream(repo, "rp-foreign", "db")


def test_unknown_stream_raises_stream_not_found(repo: Repository) -> None:
    _point_with(repo, "rp-1", {"db": b"data"})
    with pytest.raises(StreamNotFound) as info:
        iter_stream(repo, "rp-1", "nope")  # at the call, not at the first read
    assert (info.value.owner_id, info.value.name, info.value.kind) == ("rp-1", "nope", "restore point")
    assert info.value.restore_point_id == "rp-1"
    assert "restore point 'rp-1' has no stream 'nope'" in str(info.value)
    with pytest.raises(StreamNotFound):
        StreamReader(repo, repo.read_restore_point("rp-1"), "nope")


# -- manifests ------------------------------------------------------------------------------------------

# Produced by the manifest code that predates streams, for the same restore point.
FORMAT_1 = (
    b'{"created_at":"2025-03-04T03:06:07.890123+00:00","disks":[{"change_id":"52 de 1/7","chunk_size":65536,'
    b'"index":{"blake3":"abababababababababababababababababababababababababababababababab","chunks":4,'
    b'"key":"indexes/rp-1/0"},"key":"2000","label":"Hard disk 1","size":196613}],"format":1,"id":"rp-1",'
    b'"metadata":{"job":42,"\\u00fc":"\\u00e9"},"vm_config":{"cpus":2,"name":"vm1","nested":{"a":null,'
    b'"b":[1,2]}}}'
)


def _disk_only_point() -> RestorePoint:
    disk = DiskRecord(
        key="2000",
        label="Hard disk 1",
        size=3 * 65536 + 5,
        chunk_size=65536,
        change_id="52 de 1/7",
        index_key="indexes/rp-1/0",
        index_hash="ab" * 32,
        chunks=4,
    )
    return RestorePoint(
        id="rp-1",
        created_at=datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=timezone(timedelta(hours=2))),
        vm_config={"name": "vm1", "cpus": 2, "nested": {"b": [1, 2], "a": None}},
        metadata={"job": 42, "ü": "é"},
        disks=(disk,),
    )


def test_disk_only_manifest_is_format_1_byte_for_byte() -> None:
    point = _disk_only_point()
    assert point.to_json() == FORMAT_1
    assert RestorePoint.from_json(FORMAT_1) == point


def test_disk_only_restore_point_is_stored_as_format_1(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    data = disk_bytes(2 * CHUNK, seed=70)
    writer = repo.begin_restore_point("rp-1", vm_config={"name": "vm1"})
    writer.add_disk(
        key="2000", label="Hard disk 1", index=backup_disk(repo, BytesReader(data), len(data)).index
    )
    point = writer.commit()
    stored = (tmp_path / "r" / "restore-points" / "rp-1").read_bytes()
    assert stored == point.to_json()
    assert json.loads(stored)["format"] == 1 and "streams" not in json.loads(stored)


def test_manifest_with_streams_is_format_2_and_round_trips(repo: Repository) -> None:
    data = disk_bytes(2 * CHUNK, seed=71)
    writer = repo.begin_restore_point("rp-1", vm_config={"name": "vm1"}, metadata={"policy": "app"})
    writer.add_disk(
        key="2000", label="Hard disk 1", index=backup_disk(repo, BytesReader(data), len(data)).index
    )
    backup_stream(
        repo, writer, "mariadb/shop", [data[:5000]], params=SMALL_CDC, metadata={"engine": "mariadb"}
    )
    point = writer.commit()
    assert json.loads(point.to_json())["format"] == 2
    assert RestorePoint.from_json(point.to_json()) == point
    assert repo.read_restore_point("rp-1") == point
    duplicated = json.loads(point.to_json())
    duplicated["streams"].append(duplicated["streams"][0])
    with pytest.raises(ValueError, match="same name"):
        RestorePoint.from_json(json.dumps(duplicated).encode())
    assert point.created_at.tzinfo is not None and point.created_at <= datetime.now(UTC)
