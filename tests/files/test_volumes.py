"""Volume discovery: GPT, MBR with logical partitions, LVM2 logical volumes, and browsing each volume."""

from __future__ import annotations

import threading

import pytest

from app.files import DiskBrowser, FsType, Scheme, UnsupportedFilesystem
from tests.files.checks import check_tree
from tests.files.conftest import Images, OpenSource
from tests.files.images import MiB


def test_gpt_disk(built: Images, open_source: OpenSource) -> None:
    browser = DiskBrowser(open_source(built.gpt()))
    volumes = browser.volumes()
    summary = [
        (v.id, v.partition, v.scheme, v.offset, v.size, v.filesystem, v.label, v.name) for v in volumes
    ]
    assert summary == [
        ("1", 1, Scheme.GPT, 1 * MiB, 32 * MiB, FsType.EXT4, "ext4-label", "root"),
        ("2", 2, Scheme.GPT, 33 * MiB, 300 * MiB, FsType.XFS, "xfs-label", "srv"),
        ("3", 3, Scheme.GPT, 333 * MiB, 32 * MiB, FsType.NTFS, "ntfs-label", "windows"),
        ("4", 4, Scheme.GPT, 365 * MiB, 40 * MiB, FsType.FAT32, "FAT32VOL", "esp"),
        ("5", 5, Scheme.GPT, 405 * MiB, 8 * MiB, FsType.SWAP, "swap-label", "swap"),
    ]
    assert volumes[0].type_id == "0fc63daf-8483-4772-8e79-3d69d8477de4"
    assert volumes[0].type_name == "Linux filesystem data"
    assert volumes[2].type_name == "Windows Basic data partition"
    assert all(v.guid and v.problem is None for v in volumes)
    for number, kind in (("1", "ext4"), ("2", "xfs"), ("3", "ntfs"), ("4", "fat32")):
        check_tree(browser.filesystem(number), built.single(kind))
    with pytest.raises(UnsupportedFilesystem, match="volume 5 is swap space"):
        browser.filesystem("5")


def test_mbr_disk_with_logical_partitions(built: Images, open_source: OpenSource) -> None:
    browser = DiskBrowser(open_source(built.mbr()))
    summary = [(v.id, v.scheme, v.offset, v.size, v.filesystem, v.type_id) for v in browser.volumes()]
    assert summary == [
        ("1", Scheme.MBR, 1 * MiB, 32 * MiB, FsType.FAT16, "0x06"),
        ("3", Scheme.MBR, 99 * MiB, 4 * MiB, FsType.FAT12, "0x01"),
        ("5", Scheme.MBR, 34 * MiB, 32 * MiB, FsType.EXT3, "0x83"),
        ("6", Scheme.MBR, 67 * MiB, 32 * MiB, FsType.NTFS, "0x07"),
    ]
    for number, kind in (("1", "fat16"), ("3", "fat12"), ("5", "ext3"), ("6", "ntfs")):
        check_tree(browser.filesystem(number), built.single(kind), read=number == "5")


@pytest.mark.parametrize("layout", ["whole disk", "gpt"])
def test_lvm_logical_volumes(layout: str, built: Images, open_source: OpenSource) -> None:
    whole, gpt, group, expected = built.lvm()
    browser = DiskBrowser(open_source(whole if layout == "whole disk" else gpt))
    volumes = {v.id: v for v in browser.volumes()}
    assert list(volumes) == ["1", f"lvm:{group}/data", f"lvm:{group}/root"]
    pv = volumes["1"]
    assert (pv.scheme, pv.filesystem, pv.label) == (
        Scheme.NONE if layout == "whole disk" else Scheme.GPT,
        FsType.LVM2,
        group,
    )
    root = volumes[f"lvm:{group}/root"]
    assert (root.scheme, root.partition, root.offset, root.size) == (Scheme.LVM, None, None, 20 * MiB)
    assert (root.filesystem, root.label, root.name, root.type_id) == (
        FsType.EXT4,
        "ext4-label",
        "root",
        "linear",
    )
    assert volumes[f"lvm:{group}/data"].filesystem is FsType.EXT2
    # root's second segment lies after data's extents: its files read right only if the mapping is
    check_tree(browser.filesystem(f"lvm:{group}/root"), expected["root"])
    check_tree(browser.filesystem(f"lvm:{group}/data"), expected["data"])
    with pytest.raises(UnsupportedFilesystem, match="LVM2 physical volume: browse its logical volumes"):
        browser.filesystem("1")


def test_one_browser_shared_by_threads(built: Images, open_source: OpenSource) -> None:
    browser = DiskBrowser(open_source(built.gpt()))
    opened: dict[str, list[object]] = {volume_id: [] for volume_id in "1234"}
    errors: list[BaseException] = []

    def work(volume_id: str) -> None:
        try:
            for _ in range(3):
                fs = browser.filesystem(volume_id)
                opened[volume_id].append(fs)
                assert fs.list("/").total > 0
                with fs.open("/hello.txt") as f:
                    assert f.read() == b"Hello, world!\n"
        except BaseException as exc:  # reported below, with the thread's own traceback
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(v,)) for v in "12341234"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(len({id(fs) for fs in found}) == 1 for found in opened.values())  # opened once each
