"""Plain data handed out by file browsing: volumes, directory entries, pages of a listing.

Frozen dataclasses with no dissect object inside, so they can be cached, compared, serialised and passed
between threads freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Scheme(StrEnum):
    """How a volume was found: in a partition table, as the whole disk, or inside LVM."""

    GPT = "gpt"
    MBR = "mbr"
    APM = "apm"
    BSD = "bsd"
    NONE = "none"  # no partition table: the filesystem (or LVM physical volume) spans the whole disk
    LVM = "lvm"  # a logical volume of an LVM2 volume group whose physical volumes are on this disk


class FsType(StrEnum):
    EXT2 = "ext2"
    EXT3 = "ext3"
    EXT4 = "ext4"
    XFS = "xfs"
    NTFS = "ntfs"
    FAT12 = "fat12"
    FAT16 = "fat16"
    FAT32 = "fat32"
    LVM2 = "lvm2"  # an LVM2 physical volume: its logical volumes are listed as volumes of their own
    SWAP = "swap"  # Linux swap space: recognised so that users see why there is nothing to browse
    UNKNOWN = "unknown"

    @property
    def browsable(self) -> bool:
        return self not in (FsType.LVM2, FsType.SWAP, FsType.UNKNOWN)


@dataclass(frozen=True, slots=True)
class Volume:
    """A partition, the whole disk, or a logical volume.

    ``id`` is what callers pass back to ``DiskBrowser.filesystem``: the partition number in decimal for
    partitions ("1", "5"; MBR logical partitions are numbered from 5 as Linux does; the whole disk without
    a partition table is "1"), ``lvm:<vg>/<lv>`` for logical volumes. ``partition`` is the same number as
    an int (None for logical volumes). ``problem`` is set when a signature was found but the volume still
    cannot be browsed: a damaged superblock, LVM metadata that cannot be read, a logical volume with
    extents on another disk.
    """

    id: str
    partition: int | None
    scheme: Scheme
    offset: int | None  # byte offset on the disk; None for logical volumes (their extents are scattered)
    size: int
    filesystem: FsType
    label: str | None = None
    type_id: str | None = None  # MBR type ("0x83"), GPT type GUID, LV segment type ("linear")
    type_name: str | None = None  # "Linux filesystem data", "NTFS", …
    name: str | None = None  # GPT partition name, LV name
    guid: str | None = None  # GPT unique partition GUID, LV UUID
    problem: str | None = None  # why a volume that looks like it holds data cannot be browsed


class EntryType(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"  # NTFS symbolic links and junctions too
    OTHER = "other"  # devices, FIFOs, sockets


@dataclass(frozen=True, slots=True)
class Entry:
    """What a directory listing or ``stat`` says about one name (the link itself for symbolic links).

    ``size`` is the content length for files, the length of the target (in UTF-8) for symbolic links and
    0 for directories (their on-disk size says nothing useful). A field is None where the filesystem does not
    record it: ``mode``/``uid``/``gid`` on NTFS and FAT, ``owner`` (a Windows SID such as
    ``S-1-5-32-544``) everywhere but NTFS, ``attributes`` (Windows FILE_ATTRIBUTE_* bits) everywhere but
    NTFS and FAT.
    """

    path: str
    name: str
    type: EntryType
    size: int
    mtime: datetime | None  # aware, UTC
    mode: int | None = None  # permission bits only (stat.S_IMODE): 0o644, 0o4755, …
    uid: int | None = None
    gid: int | None = None
    owner: str | None = None
    attributes: int | None = None
    symlink_target: str | None = None


@dataclass(frozen=True, slots=True)
class DirectoryPage:
    """One page of a directory listing, in name order (case-folded first, so ``a`` < ``B`` < ``c``).

    ``next_cursor`` (None on the last page) is passed as ``cursor`` to get the next page; it is the last
    name of this page, so it stays valid across reopenings of the same restore point.
    """

    path: str
    entries: list[Entry] = field(default_factory=list)
    total: int = 0
    next_cursor: str | None = None
