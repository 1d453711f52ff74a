"""Fixtures for the file-browsing tests: images built once per session, and the two kinds of source.

Every image is browsed twice: straight from the image file (``FileSource``) and out of a repository it
was backed up into (``DiskImageReader``), which is what restores use. Images and backups are cached in a
session directory, so each is built once however many tests use it.
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.chunkstore import (
    DEFAULT_CHUNK_SIZE,
    DiskImageReader,
    FileReader,
    FsBackend,
    Repository,
    ScryptParams,
    backup_disk,
)
from app.chunkstore.index import DiskIndex
from app.files import ByteSource, EntryType, FileSource, FsType
from tests.files import disks, images
from tests.files.disks import Part
from tests.files.images import GiB, Item, MiB

CHUNK = 64 * 1024  # small chunks: reads cross many chunk boundaries
FAST_KDF = ScryptParams(n=2**10, r=8, p=1)


@dataclass(frozen=True)
class Image:
    """A disk image and what the tests expect on it (for single-filesystem images)."""

    path: Path
    fstype: FsType
    label: str | None
    items: tuple[Item, ...]


def ntfs_tree() -> list[Item]:
    links = [Item("/links", EntryType.DIR), Item("/links/to-hello", EntryType.SYMLINK, target="../hello.txt")]
    return [*images.tree(posix=False), *links]


class Images:
    """Builds each image on first use and keeps it for the session."""

    def __init__(self, work: Path) -> None:
        self.work = work

    @functools.cache  # noqa: B019 - one Images per session
    def single(self, kind: str) -> Image:
        work = self.work / kind
        work.mkdir(exist_ok=True)
        if kind in ("ext2", "ext3", "ext4"):
            items = images.tree(posix=True)
            return Image(images.ext_image(kind, items, work), FsType(kind), f"{kind}-label", tuple(items))
        if kind == "xfs":
            items = images.tree(posix=True, spaces=False)
            return Image(images.xfs_image(items, work), FsType.XFS, "xfs-label", tuple(items))
        if kind == "ntfs":
            items = ntfs_tree()
            return Image(images.ntfs_image(items, work), FsType.NTFS, "ntfs-label", tuple(items))
        bits = {"fat12": 12, "fat16": 16, "fat32": 32}[kind]
        size = {12: 4 * MiB, 16: 32 * MiB, 32: 40 * MiB}[bits]
        items = images.tree(posix=False, big=bits != 12, astral=False)
        return Image(images.fat_image(bits, items, work, size), FsType(kind), f"FAT{bits}VOL", tuple(items))

    @functools.cache  # noqa: B019
    def gpt(self) -> Path:
        """GPT: 1 ext4, 2 XFS, 3 NTFS, 4 FAT32, 5 swap."""
        path = self.work / "gpt.img"
        parts = [
            Part(32 * MiB, disks.GPT_LINUX, self.single("ext4").path, "root"),
            Part(300 * MiB, disks.GPT_LINUX, self.single("xfs").path, "srv"),
            Part(32 * MiB, disks.GPT_BASIC_DATA, self.single("ntfs").path, "windows"),
            Part(40 * MiB, disks.GPT_BASIC_DATA, self.single("fat32").path, "esp"),
            Part(8 * MiB, "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", images.swap_image(self.work), "swap"),
        ]
        disks.partitioned_disk(path, "gpt", parts)
        return path

    @functools.cache  # noqa: B019
    def mbr(self) -> Path:
        """MBR: 1 FAT16, 2 extended with 5 ext3 and 6 NTFS, 3 FAT12."""
        path = self.work / "mbr.img"
        parts = [
            Part(32 * MiB, "6", self.single("fat16").path),
            Part(
                0,
                "5",
                logical=(
                    Part(32 * MiB, "83", self.single("ext3").path),
                    Part(32 * MiB, "7", self.single("ntfs").path),
                ),
            ),
            Part(4 * MiB, "1", self.single("fat12").path),
        ]
        disks.partitioned_disk(path, "dos", parts)
        return path

    @functools.cache  # noqa: B019
    def big(self) -> tuple[Path, bytes]:
        """A 2 GiB sparse disk: GPT, one ext4 partition filling it, an 8 MiB random file on it."""
        work = self.work / "big"
        work.mkdir(exist_ok=True)
        items = [
            Item("/big.bin", EntryType.FILE, random.Random(3).randbytes(8 * MiB)),
            Item("/dir", EntryType.DIR, mode=0o755),
            Item("/dir/hello.txt", EntryType.FILE, b"hello\n"),
        ]
        src = images.write_tree(items, work / "src")
        path = self.work / "big.img"
        offsets = disks.partitioned_disk(path, "gpt", [Part(2 * GiB - 2 * MiB, disks.GPT_LINUX)])
        sectors = (2 * GiB - 2 * MiB) // images.SECTOR
        images.run(
            ["mke2fs", "-q", "-F", "-t", "ext4", "-E", f"offset={offsets[1]}", "-d", src, path, f"{sectors}s"]
        )
        return path, items[0].data

    @functools.cache  # noqa: B019
    def lvm(self) -> tuple[Path, Path, str, dict[str, Image]]:
        """An LVM2 PV as a whole disk and inside a GPT partition; LVs ``root`` (ext4, two segments with
        ``data`` between them) and ``data`` (ext2)."""
        work = self.work / "lvm"
        work.mkdir(exist_ok=True)
        pv = disks.lvm_physical_volume(work, {"root": [12 * MiB, 8 * MiB], "data": [8 * MiB]})
        root_items = images.tree(posix=True, big=False)
        data_items = images.tree(posix=False, big=False)
        (work / "root").mkdir(exist_ok=True)
        (work / "data").mkdir(exist_ok=True)
        root = images.ext_image("ext4", root_items, work / "root", size=20 * MiB)
        data = images.ext_image("ext2", data_items, work / "data", size=8 * MiB)
        disks.write_into(root, pv.image, pv.segments["root"])
        disks.write_into(data, pv.image, pv.segments["data"])
        disk = self.work / "lvm-gpt.img"
        disks.partitioned_disk(disk, "gpt", [Part(40 * MiB, disks.GPT_LVM, pv.image, "lvm")])
        expected = {
            "root": Image(root, FsType.EXT4, "ext4-label", tuple(root_items)),
            "data": Image(data, FsType.EXT2, "ext2-label", tuple(data_items)),
        }
        return pv.image, disk, pv.group, expected


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Images:
    return Images(tmp_path_factory.mktemp("files-images"))


class Backups:
    """One repository per session; each image is backed up into it once."""

    def __init__(self, root: Path, chunk_size: int = CHUNK) -> None:
        self.repo = Repository.create(FsBackend(root, durable=False), chunk_size=chunk_size, kdf=FAST_KDF)
        self._indexes: dict[Path, DiskIndex] = {}
        self._lock = threading.Lock()

    def index(self, image: Path) -> DiskIndex:
        with self._lock:
            if image not in self._indexes:
                with FileReader(image) as reader:
                    self._indexes[image] = backup_disk(self.repo, reader, reader.size, workers=2).index
            return self._indexes[image]

    def reader(self, image: Path, *, cache_bytes: int = 4 * MiB) -> DiskImageReader:
        return DiskImageReader(self.repo, self.index(image), cache_bytes=cache_bytes)


@pytest.fixture(scope="session")
def backups(tmp_path_factory: pytest.TempPathFactory) -> Backups:
    return Backups(tmp_path_factory.mktemp("files-repo") / "repo")


@pytest.fixture(scope="session")
def real_backups(tmp_path_factory: pytest.TempPathFactory) -> Backups:
    """A repository with the production chunk size (1 MiB), for counting what browsing fetches."""
    return Backups(tmp_path_factory.mktemp("files-repo-1m") / "repo", chunk_size=DEFAULT_CHUNK_SIZE)


OpenSource = Callable[[Path], ByteSource]


@pytest.fixture(params=["file", "repository"])
def open_source(request: pytest.FixtureRequest, backups: Backups) -> Iterator[OpenSource]:
    """A function opening an image as the parametrised kind of source."""
    opened: list[FileSource] = []

    def open_(image: Path) -> ByteSource:
        if request.param == "file":
            source = FileSource(image)
            opened.append(source)
            return source
        return backups.reader(image)

    yield open_
    for source in opened:
        source.close()
