"""Each filesystem, alone on a disk, browsed from the image file and from a repository backup of it."""

from __future__ import annotations

import io
import random
import threading

import pytest

from app.files import DiskBrowser, EntryType, FsType, Scheme, Volume
from app.files.listing import sort_key
from tests.files.checks import check_tree
from tests.files.conftest import Images, OpenSource

KINDS = ["ext2", "ext3", "ext4", "xfs", "ntfs", "fat12", "fat16", "fat32"]


@pytest.mark.parametrize("kind", KINDS)
def test_whole_disk_filesystem_matches_its_files(kind: str, built: Images, open_source: OpenSource) -> None:
    image = built.single(kind)
    browser = DiskBrowser(open_source(image.path))
    size = image.path.stat().st_size
    assert browser.volumes() == [
        Volume(
            id="1",
            partition=1,
            scheme=Scheme.NONE,
            offset=0,
            size=size,
            filesystem=image.fstype,
            label=image.label,
        )
    ]
    fs = browser.filesystem("1")
    assert (fs.fstype, fs.label) == (image.fstype, image.label)
    assert browser.filesystem("1") is fs  # opened once per browser
    check_tree(fs, image)


@pytest.mark.parametrize("kind", ["ext2", "ext4", "xfs", "ntfs", "fat32"])
def test_random_access_reads(kind: str, built: Images, open_source: OpenSource) -> None:
    image = built.single(kind)
    fs = DiskBrowser(open_source(image.path)).filesystem("1")
    data = next(item.data for item in image.items if item.path == "/data/sparse.bin")
    rng = random.Random(kind)
    with fs.open("/data/sparse.bin") as f:
        assert f.readable() and f.seekable() and f.size == len(data)
        for _ in range(60):
            offset = rng.randrange(0, len(data) + 100)
            length = rng.choice([0, 1, 511, 4096, 65536, 300_000, rng.randrange(1, 2 << 20)])
            f.seek(offset)
            expected = data[offset : offset + length]
            assert f.read(length) == expected, (offset, length)
            assert f.tell() == offset + len(expected)
        f.seek(-10, io.SEEK_END)
        assert f.read() == data[-10:]
        assert f.read(5) == b""
        f.seek(100)
        f.seek(50, io.SEEK_CUR)
        buffer = bytearray(1000)
        assert f.readinto(buffer) == 1000 and bytes(buffer) == data[150:1150]
        f.seek(0)
        parts = []
        while block := f.read(rng.randrange(1, 300_000)):  # sequential, in odd sizes: read-ahead
            parts.append(block)
        assert b"".join(parts) == data
    assert f.closed
    with pytest.raises(ValueError, match="closed"):
        f.read(1)


@pytest.mark.parametrize("kind", ["ext4", "xfs", "ntfs", "fat16"])
def test_listing_is_sorted_and_paged(kind: str, built: Images, open_source: OpenSource) -> None:
    image = built.single(kind)
    fs = DiskBrowser(open_source(image.path)).filesystem("1")
    root = fs.list("/")
    names = [entry.name for entry in root.entries]
    assert names == sorted(names, key=sort_key)
    assert root.total == len(names) and root.next_cursor is None and root.path == "/"
    assert names.index("data") < names.index("Grüße") < names.index("hello.txt") < names.index("lower.txt")
    assert names.index("lower.txt") < names.index("UPPER.TXT")

    seen: list[str] = []
    cursor = None
    while True:
        page = fs.list("/many/", cursor=cursor, limit=40)
        assert page.total == 150 and page.path == "/many"
        seen += [entry.name for entry in page.entries]
        assert all(entry.path == f"/many/{entry.name}" for entry in page.entries)
        cursor = page.next_cursor
        if cursor is None:
            break
        assert cursor == page.entries[-1].name
    assert seen == [f"file-{i:03}.txt" for i in range(150)]
    after = fs.list("/many", cursor="file-100.txt", limit=2)
    assert [e.name for e in after.entries] == ["file-101.txt", "file-102.txt"]
    between = fs.list(
        "/many", cursor="file-100.txt~", limit=1
    )  # a cursor need not be a name in the directory
    assert [e.name for e in between.entries] == ["file-101.txt"]
    assert fs.list("/many", cursor="zzz").entries == []
    with pytest.raises(ValueError, match="limit"):
        fs.list("/", limit=0)


@pytest.mark.parametrize("kind", ["ext4", "ntfs", "fat32"])
def test_stat(kind: str, built: Images, open_source: OpenSource) -> None:
    image = built.single(kind)
    fs = DiskBrowser(open_source(image.path)).filesystem("1")
    root = fs.stat("/")
    assert (root.path, root.name, root.type) == ("/", "", EntryType.DIR)
    listed = {entry.name: entry for entry in fs.list("/data").entries}
    assert fs.stat("/data/random.bin") == listed["random.bin"]
    assert fs.stat("data//./random.bin") == listed["random.bin"]  # normalised
    assert fs.stat("/nested/a/../../data/random.bin").path == "/data/random.bin"
    if image.fstype is not FsType.FAT32:  # FAT has no symbolic links
        link = fs.stat("/links/to-hello")  # the link itself, not its target
        assert (link.type, link.name) == (EntryType.SYMLINK, "to-hello")
        assert link.symlink_target in ("../hello.txt", "..\\hello.txt")


def test_concurrent_use_of_one_filesystem(built: Images, open_source: OpenSource) -> None:
    image = built.single("ext4")
    fs = DiskBrowser(open_source(image.path)).filesystem("1")
    files = {item.path: item.data for item in image.items if item.kind is EntryType.FILE}
    errors: list[str] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for path in rng.sample(sorted(files), 40):
            with fs.open(path) as f:
                if f.read() != files[path]:
                    errors.append(path)
            if fs.list("/many", limit=5).total != 150:
                errors.append("listing")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_walk_below_a_directory(built: Images, open_source: OpenSource) -> None:
    fs = DiskBrowser(open_source(built.single("xfs").path)).filesystem("1")
    assert [entry.path for entry in fs.walk("/nested")] == [
        "/nested/a",
        "/nested/a/b",
        "/nested/a/b/c",
        "/nested/a/b/c/deep.txt",
    ]
    walked = [entry.path for entry in fs.walk("/")]
    assert walked.index("/links") < walked.index("/links/dirlink") < walked.index("/many")
    assert "/links/dirlink/a" not in walked  # links are never followed
