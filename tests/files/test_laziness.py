"""Browsing reads little: a root listing on a 2 GiB disk costs a few chunks, a download each chunk once.

Counts, never timings: ``DiskImageReader.fetches`` is the number of chunks fetched from the repository.
"""

from __future__ import annotations

import pytest

from app.files import DiskBrowser, FsType
from tests.files.conftest import Backups, Images
from tests.files.images import MiB


def test_root_listing_on_a_large_disk_fetches_a_few_chunks(built: Images, real_backups: Backups) -> None:
    path, big = built.big()
    reader = real_backups.reader(path, cache_bytes=32 * MiB)
    browser = DiskBrowser(reader)
    [volume] = browser.volumes()
    assert (volume.filesystem, volume.size) == (FsType.EXT4, 2046 * MiB)
    fs = browser.filesystem("1")
    assert [entry.name for entry in fs.list("/").entries] == ["big.bin", "dir", "lost+found"]
    assert fs.list("/dir").entries[0].name == "hello.txt"
    assert reader.fetches <= 5  # of 2046 chunks: the table, the superblock, inodes, two directory blocks

    before = reader.fetches
    with fs.open("/big.bin") as f:
        assert f.read() == big
    assert reader.fetches - before <= 9  # 8 MiB of data in 1 MiB chunks: each fetched once


@pytest.mark.parametrize("volume_id", ["1", "2", "3", "4"])
def test_root_listing_of_each_filesystem_fetches_a_few_chunks(
    built: Images, real_backups: Backups, volume_id: str
) -> None:
    reader = real_backups.reader(built.gpt(), cache_bytes=32 * MiB)
    browser = DiskBrowser(reader)
    assert len(browser.volumes()) == 5
    discovery = reader.fetches
    assert discovery <= 8  # the table and the start of five volumes (of 414 chunks)
    browser.filesystem(volume_id).list("/")
    assert reader.fetches - discovery <= 4
