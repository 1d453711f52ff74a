"""File sets: a directory tree into a tar stream and back, and archives that try to escape."""

from __future__ import annotations

import gc
import io
import os
import random
import socket
import stat
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from app.agent.apps import RestoreFailed, backup_files, restore_files
from app.chunkstore import BackupCancelled, Repository
from app.chunkstore.cdc import CdcParams
from app.chunkstore.errors import UnsafeArchiveMember
from app.chunkstore.streams import backup_stream
from tests.agent.apps.conftest import damage_a_chunk

SMALL_CHUNKS = CdcParams.for_average(16 * 1024)


def make_tree(root: Path) -> None:
    (root / "etc" / "app").mkdir(parents=True)
    (root / "etc" / "app" / "app.conf").write_text("key = value\n")
    (root / "etc" / "app" / "secret").write_bytes(os.urandom(3000))
    os.chmod(root / "etc" / "app" / "secret", 0o640)
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n" + os.urandom(200_000))
    os.chmod(root / "bin" / "tool", 0o4755)  # noqa: S103 - setuid must survive a restore with owners
    os.link(root / "bin" / "tool", root / "bin" / "tool-again")
    (root / "data").mkdir(mode=0o750)
    (root / "data" / "Grüße ✓ 日本.txt").write_text("unicode names\n")
    (root / "data" / "empty").mkdir()
    (root / "data" / "zero").write_bytes(b"")
    os.symlink("../etc/app/app.conf", root / "data" / "relative-link")
    os.symlink("/usr/share/zoneinfo/UTC", root / "data" / "absolute-link")
    os.symlink("missing-target", root / "data" / "dangling")
    os.chown(root / "data" / "zero", 1234, 5678)
    os.mkfifo(root / "data" / "fifo")
    os.utime(root / "etc" / "app" / "app.conf", (1_600_000_000.123456, 1_600_000_000.123456))
    os.utime(root / "data", (1_500_000_000, 1_500_000_000))


def snapshot(root: Path, *, skip: tuple[str, ...] = ("data/fifo", "data/sock")) -> dict[str, Any]:
    """Type, mode, owner, mtime (microseconds), content or link target of everything below root."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if rel in skip:
                continue
            st = path.lstat()
            entry: dict[str, Any] = {
                "mode": stat.S_IMODE(st.st_mode),
                "type": stat.S_IFMT(st.st_mode),
                "owner": (st.st_uid, st.st_gid),
            }
            if stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(path)
            else:
                entry["mtime_ns"] = st.st_mtime_ns
            if stat.S_ISREG(st.st_mode):
                entry["content"] = path.read_bytes()
            out[rel] = entry
    return out


def test_a_tree_comes_back_exactly(tmp_path: Path, repo: Repository) -> None:
    source = tmp_path / "src"
    source.mkdir()
    make_tree(source)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(source / "data" / "sock"))
    try:
        writer = repo.begin_restore_point("rp-1", vm_config={})
        result = backup_files(writer, [source, source / "etc", tmp_path / "nope"], label="test")
        point = writer.commit()
    finally:
        server.close()
    assert result.name == "files/test"
    warnings = "\n".join(result.warnings)
    assert "data/fifo: skipped: a FIFO" in warnings
    assert "data/sock: skipped: a socket" in warnings
    assert "nope: skipped" in warnings
    meta = point.stream("files/test").metadata
    assert meta["paths"] == [str(tmp_path / "nope"), str(source)]  # src/etc is inside src: not twice
    assert meta["hardlinks"] == 1 and meta["warnings"] == 3

    target = tmp_path / "restored"
    restored = restore_files(repo, "rp-1", "files/test", target)
    assert restored.hardlinks == 1 and restored.symlinks == 3 and not restored.warnings
    back = target / str(source).lstrip("/")
    assert snapshot(back) == snapshot(source)
    assert (back / "bin" / "tool").stat().st_ino == (back / "bin" / "tool-again").stat().st_ino


def test_unreadable_and_shrinking_files_are_warnings(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root reads everything, so the failures are simulated at the system-call edge: one file
    cannot be opened, another shrinks between its header and its data. The archive stays valid."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "locked").write_text("secret\n")
    (source / "log").write_bytes(b"x" * 100_000)
    (source / "fine").write_text("fine\n")
    real_open = os.open
    real_gettarinfo = tarfile.TarFile.gettarinfo

    def open_denied(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path) == str(source / "locked"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    def shrinking(self: tarfile.TarFile, *args: Any, **kwargs: Any) -> tarfile.TarInfo:
        info = real_gettarinfo(self, *args, **kwargs)
        if info.name.endswith("/log"):
            os.truncate(source / "log", 1000)  # after the size went into the header
        return info

    monkeypatch.setattr(os, "open", open_denied)
    monkeypatch.setattr(tarfile.TarFile, "gettarinfo", shrinking)
    writer = repo.begin_restore_point("rp-1", vm_config={})
    result = backup_files(writer, [source])
    writer.commit()
    monkeypatch.undo()
    assert any("locked: skipped: Permission denied" in w for w in result.warnings)
    assert any("log: shrank while being read" in w for w in result.warnings)

    target = tmp_path / "restored"
    restore_files(repo, "rp-1", "files/default", target)
    back = target / str(source).lstrip("/")
    assert (back / "fine").read_text() == "fine\n"
    assert (back / "log").read_bytes() == b"x" * 1000 + bytes(99_000)
    assert not (back / "locked").exists()


def test_an_unchanged_tree_stores_nothing_new(tmp_path: Path, repo: Repository) -> None:
    source = tmp_path / "src"
    source.mkdir()
    make_tree(source)
    for point in ("rp-1", "rp-2"):
        writer = repo.begin_restore_point(point, vm_config={})
        result = backup_files(writer, [source], params=SMALL_CHUNKS)
        writer.commit()
    assert result.stats.chunks_new == 0 and result.stats.chunks_total > 1


def test_only_the_selected_paths_are_restored(tmp_path: Path, repo: Repository) -> None:
    source = tmp_path / "src"
    source.mkdir()
    make_tree(source)
    writer = repo.begin_restore_point("rp-1", vm_config={})
    backup_files(writer, [source])
    writer.commit()
    target = tmp_path / "restored"
    restore_files(repo, "rp-1", "files/default", target, paths=[str(source / "etc")])
    back = target / str(source).lstrip("/")
    assert sorted(p.name for p in back.iterdir()) == ["etc"]
    assert snapshot(back / "etc") == snapshot(source / "etc")


def test_without_owners_setuid_bits_are_dropped(tmp_path: Path, repo: Repository) -> None:
    source = tmp_path / "src"
    source.mkdir()
    make_tree(source)
    writer = repo.begin_restore_point("rp-1", vm_config={})
    backup_files(writer, [source])
    writer.commit()
    target = tmp_path / "restored"
    restore_files(repo, "rp-1", "files/default", target, owners=False)
    back = target / str(source).lstrip("/")
    assert stat.S_IMODE((back / "bin" / "tool").stat().st_mode) == 0o755
    assert (back / "data" / "zero").stat().st_uid == os.geteuid()


def test_a_damaged_stream_fails_the_restore(tmp_path: Path, repo: Repository) -> None:
    source = tmp_path / "src"
    source.mkdir()
    make_tree(source)
    writer = repo.begin_restore_point("rp-1", vm_config={})
    backup_files(writer, [source], params=SMALL_CHUNKS)
    writer.commit()
    damage_a_chunk(tmp_path / "repo")
    with pytest.raises(RestoreFailed, match="cannot be read back"):
        restore_files(repo, "rp-1", "files/default", tmp_path / "restored")


# -- archives that try to escape the target --------------------------------------------------------


Member = tuple[tarfile.TarInfo, bytes | None]


def _member(name: str, *, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b"pwned\n") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def _evil_repo(repo: Repository, members: list[Member], *, point: str = "rp-evil") -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    writer = repo.begin_restore_point(point, vm_config={})
    backup_stream(
        repo, writer, "files/evil", [buf.getvalue()], metadata={"engine": "files", "format": "tar-pax"}
    )
    writer.commit()


EVIL = {
    "absolute path": [_member("/OUTSIDE/file")],
    "dot-dot": [_member("../OUTSIDE/file")],
    "dot-dot inside": [_member("a/../../OUTSIDE/file")],
    "file below an archive symlink": [
        _member("link", kind=tarfile.SYMTYPE, link="../OUTSIDE"),
        _member("link/file"),
    ],
    "file below a relative archive symlink": [
        _member("dir", kind=tarfile.DIRTYPE),
        _member("dir/up", kind=tarfile.SYMTYPE, link=".."),
        _member("dir/up/file"),
    ],
    "hard link out": [_member("hard", kind=tarfile.LNKTYPE, link="../OUTSIDE/file")],
    "hard link to an absolute path": [_member("hard", kind=tarfile.LNKTYPE, link="/etc/passwd")],
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_members_escaping_the_target_are_refused(case: str, tmp_path: Path, repo: Repository) -> None:
    outside = tmp_path / "OUTSIDE"
    outside.mkdir()
    (outside / "file").write_text("precious\n")
    _evil_repo(repo, EVIL[case])
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveMember):
        restore_files(repo, "rp-evil", "files/evil", target)
    assert (outside / "file").read_text() == "precious\n"
    assert sorted(p.name for p in outside.iterdir()) == ["file"]


def test_a_symlink_already_in_the_target_is_not_followed_out(tmp_path: Path, repo: Repository) -> None:
    outside = tmp_path / "OUTSIDE"
    outside.mkdir()
    (outside / "file").write_text("precious\n")
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "dir")  # e.g. left by an earlier restore of an absolute link
    _evil_repo(repo, [_member("dir/file")])
    with pytest.raises(UnsafeArchiveMember, match="outside the target"):
        restore_files(repo, "rp-evil", "files/evil", target)
    assert (outside / "file").read_text() == "precious\n"

    # A member at the link's own path replaces the link; nothing is written through it.
    _evil_repo(repo, [_member("dir")], point="rp-2")
    restore_files(repo, "rp-2", "files/evil", target)
    assert (target / "dir").is_file() and not (target / "dir").is_symlink()
    assert (outside / "file").read_text() == "precious\n"


def test_symlinks_leaving_the_target_follow_the_chosen_policy(tmp_path: Path, repo: Repository) -> None:
    _evil_repo(repo, [_member("localtime", kind=tarfile.SYMTYPE, link="/usr/share/zoneinfo/UTC")])
    with pytest.raises(UnsafeArchiveMember, match="leads outside"):
        restore_files(repo, "rp-evil", "files/evil", tmp_path / "t1", external_symlinks="refuse")
    skipped = restore_files(repo, "rp-evil", "files/evil", tmp_path / "t2", external_symlinks="skip")
    assert skipped.warnings and not (tmp_path / "t2" / "localtime").is_symlink()
    restore_files(repo, "rp-evil", "files/evil", tmp_path / "t3")
    assert os.readlink(tmp_path / "t3" / "localtime") == "/usr/share/zoneinfo/UTC"


def test_a_file_whose_content_cannot_be_read_back_leaves_the_existing_one_as_it_was(
    tmp_path: Path, repo: Repository
) -> None:
    """Restored files are written beside their destination and renamed over it when complete:
    the existing file is never replaced by a truncated one."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "big.bin").write_bytes(random.Random(5).randbytes(2 * 1024 * 1024))
    writer = repo.begin_restore_point("rp-1", vm_config={})
    backup_files(writer, [source], params=SMALL_CHUNKS)
    writer.commit()
    damage_a_chunk(tmp_path / "repo", skip=3)
    target = tmp_path / "restored"
    existing = target / str(source).lstrip("/") / "big.bin"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"the file as it is today\n")
    with pytest.raises(RestoreFailed, match="cannot be read back"):
        restore_files(repo, "rp-1", "files/default", target)
    assert existing.read_bytes() == b"the file as it is today\n"
    assert sorted(p.name for p in existing.parent.iterdir()) == ["big.bin"]  # no temporary left


def test_each_restored_file_reaches_the_disk_before_it_replaces_the_existing_one(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename the disk may see before the data (XFS, ext4 without auto_da_alloc) could leave
    an empty file where the good one was after a power loss: every temporary file is flushed
    (the real fsync, watched) before it is renamed over its destination."""
    source = tmp_path / "src"
    make_tree(source)
    writer = repo.begin_restore_point("rp-1", vm_config={})
    backup_files(writer, [source])
    writer.commit()
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src: str, dst: str) -> None:
        events.append(("rename", os.path.abspath(src)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    result = restore_files(repo, "rp-1", "files/default", tmp_path / "restored")
    monkeypatch.undo()
    renamed = [path for what, path in events if what == "rename"]
    assert len(renamed) == result.files > 0
    for path in renamed:
        assert events.index(("fsync", path)) < events.index(("rename", path)), path


def test_a_cancelled_file_set_backup_says_so(tmp_path: Path, repo: Repository) -> None:
    """The cancel reaches the caller as such, not as the error of tarfile's last flush into the
    aborted stream (which said "stream ... is aborted" and hid the cause)."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "big.bin").write_bytes(random.Random(6).randbytes(1024 * 1024))
    cancel = threading.Event()
    cancel.set()
    writer = repo.begin_restore_point("rp-1", vm_config={})
    with pytest.raises(BackupCancelled):
        backup_files(writer, [source], params=SMALL_CHUNKS, cancel=cancel)
    gc.collect()  # nor does tarfile's stream, collected, write into the aborted one (an unraisable error)
