"""Comparing what a browsed filesystem shows with the files the image was built from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.files import EntryType, Filesystem, FsType
from tests.files.conftest import Image
from tests.files.images import MTIME

POSIX = (FsType.EXT2, FsType.EXT3, FsType.EXT4, FsType.XFS)
FAT = (FsType.FAT12, FsType.FAT16, FsType.FAT32)
ADMINISTRATORS = "S-1-5-32-544"
FILE_ATTRIBUTE_DIRECTORY = 0x10


def expected_mtime(fstype: FsType, kind: EntryType) -> datetime | None:
    """The modification time the build tools leave; None where they set the build time."""
    if fstype in (FsType.EXT2, FsType.EXT3, FsType.EXT4):
        return datetime.fromtimestamp(MTIME, UTC)
    if fstype in FAT and kind is EntryType.FILE:
        return datetime.fromtimestamp(MTIME - MTIME % 2, UTC)  # FAT keeps even seconds
    return None


def check_tree(fs: Filesystem, image: Image, *, read: bool = True) -> None:
    """``fs`` holds exactly ``image.items`` (plus ext's lost+found), with their metadata and content."""
    walked = {entry.path: entry for entry in fs.walk("/")}
    expected = {item.path: item for item in image.items}
    extra = {"/lost+found"} if image.fstype in (FsType.EXT2, FsType.EXT3, FsType.EXT4) else set()
    assert set(walked) == set(expected) | extra
    now = datetime.now(UTC)
    for path, item in expected.items():
        entry = walked[path]
        assert (entry.name, entry.type) == (item.name, item.kind), path
        if item.kind is EntryType.FILE:
            assert entry.size == len(item.data), path
            if read:
                with fs.open(path) as f:
                    assert f.size == len(item.data)
                    assert f.read() == item.data, path
        elif item.kind is EntryType.SYMLINK:
            target = item.target.replace("/", "\\") if image.fstype is FsType.NTFS else item.target
            assert entry.symlink_target == target, path
            assert entry.size == len(target.encode()), path
        else:
            assert entry.size == 0
        assert entry.mtime is not None and entry.mtime.tzinfo is not None, path
        mtime = expected_mtime(image.fstype, item.kind)
        if mtime is not None:
            assert entry.mtime == mtime, path
        elif image.fstype not in FAT:
            assert abs(entry.mtime - now) < timedelta(hours=2), path  # made during this session
        if image.fstype in POSIX:
            assert (entry.mode, entry.uid, entry.gid) == (item.mode, item.uid, item.gid), path
            assert entry.owner is None and entry.attributes is None
        else:
            assert entry.mode is entry.uid is entry.gid is None
            assert entry.attributes is not None
            assert bool(entry.attributes & FILE_ATTRIBUTE_DIRECTORY) == (item.kind is EntryType.DIR), path
            assert entry.owner == (ADMINISTRATORS if image.fstype is FsType.NTFS else None), path
