"""One conformance suite for every Backend (restic's approach): parametrised by ``backend_kind``.

A new backend (S3) passes this suite before the repository may use it.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import app.chunkstore.fs as fs_module
from app.chunkstore import Backend, FsBackend, ObjectMissing
from tests.chunkstore.conftest import make_backend


@pytest.fixture
def backend(backend_kind: str, tmp_path: Path) -> Backend:
    return make_backend(backend_kind, tmp_path / "store", durable=True)


def test_is_a_backend(backend: Backend) -> None:
    assert isinstance(backend, Backend)


def test_put_get_roundtrip(backend: Backend) -> None:
    backend.put("a/b/c", b"hello")
    assert backend.get("a/b/c") == b"hello"
    backend.put("empty", b"")
    assert backend.get("empty") == b""


def test_accepts_bytearray_and_memoryview(backend: Backend) -> None:
    backend.put("x/1", bytearray(b"abc"))
    backend.put("x/2", memoryview(b"0123456789")[2:5])
    assert backend.get("x/1") == b"abc"
    assert backend.get("x/2") == b"234"


def test_overwrite_replaces_whole_object(backend: Backend) -> None:
    backend.put("k", b"x" * 1000)
    backend.put("k", b"short")
    assert backend.get("k") == b"short"


def test_get_missing_raises(backend: Backend) -> None:
    with pytest.raises(ObjectMissing) as info:
        backend.get("no/such")
    assert "no/such" in str(info.value)


def test_exists_and_exists_many(backend: Backend) -> None:
    backend.put("chunks/aa/1", b"1")
    backend.put("chunks/bb/2", b"2")
    assert backend.exists("chunks/aa/1")
    assert not backend.exists("chunks/aa/3")
    assert backend.exists_many(["chunks/aa/1", "chunks/bb/2", "chunks/cc/3"]) == {
        "chunks/aa/1",
        "chunks/bb/2",
    }
    assert backend.exists_many([]) == set()


def test_delete_is_idempotent(backend: Backend) -> None:
    backend.put("d/1", b"1")
    backend.delete("d/1")
    backend.delete("d/1")
    assert not backend.exists("d/1")


def test_list_by_prefix(backend: Backend) -> None:
    keys = {"chunks/aa/1", "chunks/aa/2", "chunks/bb/3", "indexes/rp/0", "config"}
    for key in keys:
        backend.put(key, b"v")
    assert set(backend.list("chunks/")) == {"chunks/aa/1", "chunks/aa/2", "chunks/bb/3"}
    assert set(backend.list("chunks/aa")) == {"chunks/aa/1", "chunks/aa/2"}
    assert set(backend.list("")) == keys
    assert list(backend.list("nothing/")) == []
    assert set(backend.list("conf")) == {"config"}


def test_stat_size_and_mtime(backend: Backend) -> None:
    before = datetime.now(UTC) - timedelta(seconds=2)
    backend.put("s/1", b"12345")
    stat = backend.stat("s/1")
    assert stat.key == "s/1"
    assert stat.size == 5
    assert stat.modified.tzinfo is not None
    assert before <= stat.modified <= datetime.now(UTC) + timedelta(seconds=2)
    with pytest.raises(ObjectMissing):
        backend.stat("s/2")


def test_touch_many_refreshes_mtime_and_reports_existing(backend: Backend) -> None:
    backend.put("t/1", b"x")
    backend.put("t/2", b"y")
    old = backend.stat("t/1").modified
    time.sleep(0.05)
    assert backend.touch_many(["t/1", "t/nope"]) == {"t/1"}
    assert backend.stat("t/1").modified > old
    assert not backend.exists("t/nope")  # touching never creates


def test_delete_if_older_removes_only_what_is_old_enough(backend: Backend) -> None:
    backend.put("g/old", b"12345")
    backend.put("g/young", b"x")
    seen = backend.stat("g/old").modified
    removed = backend.delete_if_older("g/old", seen)  # modified at the cutoff: old enough
    assert removed is not None and removed.size == 5 and removed.modified <= seen
    assert not backend.exists("g/old")
    kept = backend.delete_if_older("g/young", seen - timedelta(seconds=5))
    assert kept is not None and kept.modified > seen - timedelta(seconds=5)
    assert backend.get("g/young") == b"x"
    assert backend.delete_if_older("g/old", datetime.now(UTC)) is None  # missing
    assert list(backend.list("g/")) == ["g/young"]  # nothing left aside


def test_a_filesystem_sweep_keeps_a_chunk_touched_between_its_look_and_its_removal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving a stat-then-unlink sweep loses: a backup touches the old chunk (it found it
    stored and will reference it) right after the sweep looked at its time. The touch is the
    backend's own, run at that instant by wrapping the sweep's first look."""
    backend = FsBackend(tmp_path / "store", durable=False)
    backend.put("chunks/aa/1", b"data")
    path = tmp_path / "store" / "chunks" / "aa" / "1"
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    cutoff = datetime.now(UTC) - timedelta(minutes=30)
    real_stat = os.stat
    looks: list[str] = []

    def look_then_touch(target: str, *args: object, **kwargs: object) -> os.stat_result:
        result = real_stat(target, *args, **kwargs)  # type: ignore[arg-type]
        if not looks:
            looks.append(str(target))
            assert backend.touch_many(["chunks/aa/1"]) == {"chunks/aa/1"}
        return result

    monkeypatch.setattr(fs_module.os, "stat", look_then_touch)
    found = backend.delete_if_older("chunks/aa/1", cutoff)
    monkeypatch.undo()
    assert looks == [str(path)]
    assert found is not None and found.modified > cutoff  # seen young after the move: kept
    assert backend.get("chunks/aa/1") == b"data"
    assert list(backend.list("chunks/")) == ["chunks/aa/1"]
    # Untouched, the same sweep removes it.
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    gone = backend.delete_if_older("chunks/aa/1", cutoff)
    assert gone is not None and gone.modified <= cutoff and not backend.exists("chunks/aa/1")
    assert os.listdir(path.parent) == []


class _Stopped(BaseException):
    """The sweep's process stops here (killed, power lost)."""


def test_a_filesystem_sweep_that_stopped_midway_is_undone_by_the_next_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep stopped after it moved a touched chunk aside, before it put it back: the chunk is
    hidden from every reader until the next collection puts it back under its name. One that a
    backup stored again meanwhile leaves only the copy under its name."""
    backend = FsBackend(tmp_path / "store", durable=True)
    for key in ("chunks/aa/1", "chunks/aa/2"):
        backend.put(key, b"data of " + key.encode())
    cutoff = datetime.now(UTC) + timedelta(minutes=1)  # both old enough: each is moved aside

    def stop(*args: object) -> None:
        raise _Stopped()

    monkeypatch.setattr(fs_module.os, "unlink", stop)
    for key in ("chunks/aa/1", "chunks/aa/2"):
        with pytest.raises(_Stopped):
            backend.delete_if_older(key, cutoff)
    monkeypatch.undo()
    assert not backend.exists("chunks/aa/1") and list(backend.list("chunks/")) == []
    backend.put("chunks/aa/2", b"data of chunks/aa/2")  # a backup stored it again
    aa = tmp_path / "store" / "chunks" / "aa"
    (aa / ".gc-0123").write_bytes(b"not ours")  # an aside name this backend never gives

    assert backend.recover_interrupted_sweeps() == 0  # just moved: a collection may be running
    monkeypatch.setattr(fs_module, "SWEEP_SETTLED_S", 0.0)
    assert backend.recover_interrupted_sweeps() == 1
    assert backend.get("chunks/aa/1") == b"data of chunks/aa/1"
    assert backend.get("chunks/aa/2") == b"data of chunks/aa/2"
    assert sorted(os.listdir(aa)) == [".gc-0123", "1", "2"]  # nothing of ours aside
    assert backend.recover_interrupted_sweeps() == 0


def test_a_sweep_whose_chunk_another_collection_put_back_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two collections at once: one's recovery puts back what the other's sweep had just moved
    aside. The sweep then finds nothing aside and keeps the chunk (no FileNotFoundError)."""
    backend = FsBackend(tmp_path / "store", durable=False)
    backend.put("chunks/aa/1", b"data")
    real_rename = os.rename

    def move_then_recovered(src: str, dst: str) -> None:
        real_rename(src, dst)
        real_rename(dst, src)  # the other collection's recovery, at once

    monkeypatch.setattr(fs_module.os, "rename", move_then_recovered)
    assert backend.delete_if_older("chunks/aa/1", datetime.now(UTC) + timedelta(minutes=1)) is None
    monkeypatch.undo()
    assert backend.get("chunks/aa/1") == b"data"


def test_recovering_interrupted_sweeps_finds_nothing_to_do_on_a_clean_store(backend: Backend) -> None:
    backend.put("chunks/aa/1", b"x")
    assert backend.recover_interrupted_sweeps() == 0
    assert backend.get("chunks/aa/1") == b"x"


@pytest.mark.parametrize(
    "key", ["", "/abs", "a//b", "../x", "a/../b", "a/./b", ".hidden", "a/.tmp", "sp ace"]
)
def test_rejects_unsafe_keys(backend: Backend, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        backend.put(key, b"x")


def test_concurrent_puts_and_gets_are_atomic(backend: Backend) -> None:
    # Readers must only ever see a whole version of the object, never a torn one.
    versions = [bytes([i]) * 200_000 for i in range(1, 6)]
    backend.put("hot", versions[0])
    stop = threading.Event()
    seen: set[bytes] = set()
    errors: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            data = backend.get("hot")
            if data not in versions:
                errors.append(f"torn read of {len(data)} bytes")
            seen.add(data[:1])

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        for v in versions:
            backend.put("hot", v)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert set(backend.list("")) == {"hot"}  # no temporary files visible


def test_many_threads_put_distinct_keys(backend: Backend) -> None:
    def work(n: int) -> None:
        for i in range(20):
            backend.put(f"chunks/{n:02x}/{i}", f"{n}-{i}".encode())

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(backend.list("chunks/"))) == 160
    assert backend.get("chunks/07/19") == b"7-19"


def test_a_durable_filesystem_put_fsyncs_every_directory_it_created_in_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename is made durable by fsyncing its directory; a directory the put created is
    durable only once its parent is fsynced too (recorded here, then done for real)."""
    synced: list[str] = []
    real = fs_module._fsync_dir

    def record(directory: str) -> None:
        synced.append(os.path.relpath(directory, tmp_path / "store"))
        real(directory)

    monkeypatch.setattr(fs_module, "_fsync_dir", record)
    (tmp_path / "store").mkdir()
    backend = FsBackend(tmp_path / "store", durable=True)
    backend.put("indexes/rp-1/0", b"x")
    assert sorted(synced) == sorted([".", "indexes", "indexes/rp-1"])
    synced.clear()
    backend.put("indexes/rp-1/1", b"y")  # nothing new to create: only the rename's directory
    assert synced == ["indexes/rp-1"]
