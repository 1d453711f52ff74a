"""Errors: bad paths, wrong kinds of entries, unknown volumes, damaged filesystems, a failing repository."""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import pytest

from app.chunkstore import ChunkMissing, DiskImageReader, FileReader, FsBackend, Repository, backup_disk
from app.files import (
    CorruptFilesystem,
    DiskBrowser,
    FileSource,
    Filesystem,
    FsType,
    InvalidPath,
    IsADirectory,
    NotADirectory,
    NotAFile,
    PathNotFound,
    UnsupportedFilesystem,
    VolumeNotFound,
)
from tests.files.conftest import FAST_KDF, Images, OpenSource
from tests.files.images import MiB, run, truncate


@pytest.fixture
def ext4(built: Images, open_source: OpenSource) -> Filesystem:
    return DiskBrowser(open_source(built.single("ext4").path)).filesystem("1")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/..", "goes above the root"),
        ("/../etc/passwd", "goes above the root"),
        ("/data/../../etc", "goes above the root"),
        ("../../..", "goes above the root"),
        ("/data/\x00/x", "NUL"),
        ("/" + "x" * 256, "longer than 255"),
        ("/" + "/".join(["abcdefgh"] * 500), "longer than 4096 bytes"),
    ],
)
def test_invalid_paths_are_refused_before_reading(ext4: Filesystem, path: str, message: str) -> None:
    with pytest.raises(InvalidPath, match=message):
        ext4.list(path)
    with pytest.raises(InvalidPath, match=message):
        ext4.stat(path)
    with pytest.raises(InvalidPath, match=message):
        ext4.open(path)
    with pytest.raises(InvalidPath, match=message):
        next(ext4.walk(path))


def test_a_path_must_be_text(ext4: Filesystem) -> None:
    with pytest.raises(InvalidPath, match="must be text"):
        ext4.stat(b"/hello.txt")  # type: ignore[arg-type]


def test_missing_paths(ext4: Filesystem) -> None:
    with pytest.raises(PathNotFound, match=re.escape("'/nope' does not exist")):
        ext4.stat("/nope")
    with pytest.raises(PathNotFound, match=re.escape("'/data/nope' does not exist, so '/data/nope/x/y'")):
        ext4.list("/data/nope/x/y")
    with pytest.raises(PathNotFound):
        ext4.open("/HELLO.TXT")  # names are case-sensitive
    assert ext4.list("/data/../data").path == "/data"  # ".." inside the tree is fine


def test_wrong_kinds_of_entries(ext4: Filesystem) -> None:
    with pytest.raises(NotADirectory, match=re.escape("'/hello.txt' is a file, not a directory: open it")):
        ext4.list("/hello.txt")
    with pytest.raises(NotADirectory, match=re.escape("'/hello.txt' is a file, not a directory, so")):
        ext4.stat("/hello.txt/x")
    with pytest.raises(IsADirectory, match=re.escape("'/data' is a directory")):
        ext4.open("/data")
    with pytest.raises(NotAFile, match=re.escape("symbolic link to '../hello.txt'; links are not followed")):
        ext4.open("/links/to-hello")
    with pytest.raises(NotADirectory, match=re.escape("'/links/dirlink' is a symbolic link to '../nested'")):
        ext4.stat("/links/dirlink/a")
    with pytest.raises(NotADirectory, match="symbolic link; links are not followed"):
        ext4.list("/links/dirlink")
    with pytest.raises(NotADirectory):
        list(ext4.walk("/hello.txt"))


def test_ntfs_metadata_files_are_hidden(built: Images, open_source: OpenSource) -> None:
    fs = DiskBrowser(open_source(built.single("ntfs").path)).filesystem("1")
    names = {entry.name for entry in fs.list("/").entries}
    assert not {name for name in names if name.startswith("$") or name == "."}
    for hidden in ("/$MFT", "/$Secure", "/$Extend", "/$Extend/$Quota", "/$Boot"):
        with pytest.raises(PathNotFound):
            fs.stat(hidden)


def test_unknown_volumes(built: Images, open_source: OpenSource) -> None:
    browser = DiskBrowser(open_source(built.gpt()))
    for volume_id in ("0", "6", "lvm:vg/root", "", 1):
        with pytest.raises(VolumeNotFound, match=r"its volumes: 1, 2, 3, 4, 5"):
            browser.filesystem(volume_id)  # type: ignore[arg-type]
    with pytest.raises(VolumeNotFound):
        browser.volume("9")


def test_a_disk_without_a_filesystem(tmp_path: Path) -> None:
    with FileSource(truncate(tmp_path / "zeros.img", 4 * MiB)) as source:
        browser = DiskBrowser(source)
        [volume] = browser.volumes()
        assert (volume.filesystem, volume.problem) == (FsType.UNKNOWN, None)
        with pytest.raises(
            UnsupportedFilesystem, match="no filesystem that can be browsed was found on volume 1"
        ):
            browser.filesystem("1")


def test_an_encrypted_volume(tmp_path: Path) -> None:
    image = truncate(tmp_path / "luks.img", 4 * MiB)
    with open(image, "r+b") as f:
        f.write(b"LUKS\xba\xbe\x00\x02")
    with FileSource(image) as source:
        browser = DiskBrowser(source)
        [volume] = browser.volumes()
        assert volume.filesystem is FsType.UNKNOWN
        assert volume.problem == "the volume is encrypted with LUKS: its files cannot be read from the backup"
        with pytest.raises(
            UnsupportedFilesystem, match="volume 1 cannot be browsed: the volume is encrypted"
        ):
            browser.filesystem("1")


# -- damaged filesystems -------------------------------------------------------------------------------


def damaged_copy(image: Path, tmp_path: Path, patches: list[tuple[int, bytes]]) -> Path:
    copy = tmp_path / image.name
    shutil.copyfile(image, copy)
    with open(copy, "r+b") as f:
        for offset, data in patches:
            f.seek(offset)
            f.write(data)
    return copy


def test_damaged_ext_superblock(built: Images, tmp_path: Path) -> None:
    # s_blocks_per_group = 0: the magic is there, the geometry is impossible
    image = damaged_copy(built.single("ext4").path, tmp_path, [(1024 + 0x20, bytes(4))])
    with FileSource(image) as source:
        browser = DiskBrowser(source)
        [volume] = browser.volumes()
        assert volume.filesystem is FsType.UNKNOWN
        assert volume.problem is not None and "ext2/3/4 signature found, but damaged" in volume.problem
        with pytest.raises(CorruptFilesystem, match="volume 1 cannot be browsed: ext2/3/4 signature found"):
            browser.filesystem("1")


def test_damaged_ext_group_descriptor(built: Images, tmp_path: Path) -> None:
    image = built.single("ext4").path
    superblock = image.read_bytes()[1024:2048]
    first_data_block, log_block_size = struct.unpack_from("<II", superblock, 20)
    block_size = 1024 << log_block_size
    descriptors = (first_data_block + 1) * block_size
    # group 0's inode table pointing beyond the filesystem
    damaged = damaged_copy(image, tmp_path, [(descriptors + 8, struct.pack("<I", 0xFFFFFF00))])
    with FileSource(damaged) as source:
        fs = DiskBrowser(source).filesystem("1")
        with pytest.raises(
            CorruptFilesystem, match=r"listing '/' on volume 1 \(ext4\): the filesystem's structures"
        ):
            fs.list("/")


def ntfs_record_offset(image: Path, number: int) -> int:
    head = image.read_bytes()[:512]
    cluster = struct.unpack_from("<H", head, 0x0B)[0] * head[0x0D]
    mft: int = struct.unpack_from("<Q", head, 0x30)[0] * cluster
    return mft + number * 1024


def test_damaged_ntfs_records(built: Images, tmp_path: Path) -> None:
    image = built.single("ntfs").path
    many = int(re.search(r"Dumping Inode (\d+)", run(["ntfsinfo", "-F", "/many", image])).group(1))  # type: ignore[union-attr]
    damaged = damaged_copy(image, tmp_path, [(ntfs_record_offset(image, many), b"XXXX")])
    with FileSource(damaged) as source:
        fs = DiskBrowser(source).filesystem("1")
        assert fs.stat("/hello.txt").size == 14
        expected = re.escape("looking up '/many/file-001.txt' on volume 1 (ntfs)")
        with pytest.raises(CorruptFilesystem, match=expected):
            fs.stat("/many/file-001.txt")
    root = damaged_copy(image, tmp_path, [(ntfs_record_offset(image, 5), b"XXXX")])  # the root directory
    with FileSource(root) as source:
        browser = DiskBrowser(source)
        assert browser.volumes()[0].filesystem is FsType.UNKNOWN
        with pytest.raises(
            CorruptFilesystem, match="volume 1 cannot be browsed: NTFS signature found, but damaged"
        ):
            browser.filesystem("1")


def fat16_cluster_patch(image: Path, path: str, second_entry: int) -> tuple[int, bytes]:
    """A patch of the first FAT making the entry of the file's first cluster point to ``second_entry``."""
    shown = run(["mshowfat", "-i", image, f"::{path}"], env={"MTOOLS_SKIP_CHECK": "1"})
    first = int(re.search(r"<(\d+)", shown).group(1))  # type: ignore[union-attr]
    head = image.read_bytes()[:512]
    fat = struct.unpack_from("<H", head, 0x0E)[0] * struct.unpack_from("<H", head, 0x0B)[0]
    return fat + 2 * first, struct.pack("<H", first if second_entry < 0 else second_entry)


def test_damaged_fat_chains(built: Images, tmp_path: Path) -> None:
    image = built.single("fat16").path
    loop = fat16_cluster_patch(image, "/data/random.bin", -1)  # the first cluster points to itself
    early = fat16_cluster_patch(image, "/data/sparse.bin", 0xFFFF)  # the chain ends after one cluster
    with FileSource(damaged_copy(image, tmp_path, [loop, early])) as source:
        fs = DiskBrowser(source).filesystem("1")
        with pytest.raises(CorruptFilesystem, match=re.escape("'/data/random.bin': its cluster chain loops")):
            fs.open("/data/random.bin")
        ends = re.escape("'/data/sparse.bin': its cluster chain ends after 1 of")
        with pytest.raises(CorruptFilesystem, match=ends):
            fs.open("/data/sparse.bin")
        assert fs.open("/hello.txt").read() == b"Hello, world!\n"  # the rest stays readable


# -- the repository failing below the filesystem ---------------------------------------------------


def test_missing_chunks_are_reported_as_such(built: Images, tmp_path: Path) -> None:
    repo = Repository.create(FsBackend(tmp_path / "repo", durable=False), chunk_size=64 * 1024, kdf=FAST_KDF)
    image = built.single("ext4").path
    with FileReader(image) as reader:
        index = backup_disk(repo, reader, reader.size).index
    browser = DiskBrowser(DiskImageReader(repo, index, cache_bytes=0))
    fs = browser.filesystem("1")
    stream = fs.open("/data/random.bin")
    shutil.rmtree(tmp_path / "repo" / "chunks")
    with pytest.raises(ChunkMissing):
        stream.read()
    with pytest.raises(ChunkMissing):
        fs.list("/many")
    with pytest.raises(ChunkMissing):
        DiskBrowser(DiskImageReader(repo, index)).volumes()
