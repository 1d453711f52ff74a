"""Which filesystem a volume holds, and its label: a signature check, then dissect for the details.

The signatures (in the first 8 KiB) pick at most one parser; only that parser is then run, so
detection costs a few KiB per volume whatever the disk holds. A volume whose signature matches but whose
parser fails is reported as unknown, with the reason in ``problem``: it cannot be browsed, and the user
is told why (a damaged superblock) rather than just "unknown".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from app.files import _dissect as d
from app.files.errors import describe
from app.files.models import FsType
from app.files.source import BytesSource, SourceStream

log = logging.getLogger(__name__)

HEAD_BYTES = 8192
_EXT_MAGIC_AT = 1024 + 0x38  # s_magic in the superblock at 1024
_SWAP_MAGIC_AT = 4096 - 10  # 4 KiB pages (x86-64, the VMs we back up)
_SWAP_LABEL_AT = 1024 + 0x1C


_NAMES = {"lvm2": "LVM2 label", "xfs": "XFS", "ntfs": "NTFS", "ext": "ext2/3/4", "swap": "swap", "fat": "FAT"}


@dataclass(frozen=True, slots=True)
class Detection:
    fstype: FsType
    label: str | None = None
    problem: str | None = None  # a signature was found but its structures could not be read: why
    unsupported: bool = False  # the problem is a feature the parser lacks, not damage


def _lvm_label_sector(head: bytes) -> int | None:
    for sector in range(4):  # LVM2 looks for its label in the first four sectors
        at = sector * 512
        if head[at : at + 8] == b"LABELONE" and head[at + 24 : at + 32] == b"LVM2 001":
            return sector
    return None


def _sniff(head: bytes) -> str | None:
    """The signature found in ``head``, by name; None when there is none."""
    if _lvm_label_sector(head) is not None:
        return "lvm2"
    if head[:4] == b"XFSB":
        return "xfs"
    if head[3:11] == b"NTFS    ":
        return "ntfs"
    if head[_EXT_MAGIC_AT : _EXT_MAGIC_AT + 2] == b"\x53\xef":
        return "ext"
    if head[_SWAP_MAGIC_AT:4096] in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return "swap"
    if len(head) >= 512 and head[0] in (0xEB, 0xE9):  # x86 jump: a boot sector, maybe with a FAT BPB
        return "fat"
    return None


def _text(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = text.split("\x00", 1)[0].strip()
    return text or None


def _ext(stream: SourceStream) -> Detection:
    fs = d.ExtFS(stream)
    kind = {d.EXT2: FsType.EXT2, d.EXT3: FsType.EXT3, d.EXT4: FsType.EXT4}.get(fs.type, FsType.EXT4)
    return Detection(kind, _text(fs.volume_name))


def _fat(stream: SourceStream) -> Detection:
    fs = d.FATFS(stream)
    kind = {
        d.Fattype.FAT12: FsType.FAT12,
        d.Fattype.FAT16: FsType.FAT16,
        d.Fattype.FAT32: FsType.FAT32,
    }[fs.type]
    label = _text(fs.volume_label)
    return Detection(kind, None if label == "NO NAME" else label)


def fat_type(fs: Any) -> FsType:
    """FAT12/16/32 of an opened ``FATFS``."""
    return {d.Fattype.FAT12: FsType.FAT12, d.Fattype.FAT16: FsType.FAT16}.get(fs.type, FsType.FAT32)


def _lvm(stream: SourceStream) -> Detection:
    metadata = d.LVM2Device(stream).metadata or {}
    groups = [name for name, value in metadata.items() if isinstance(value, dict)]
    return Detection(FsType.LVM2, groups[0] if len(groups) == 1 else None)


_ENCRYPTED = {  # signature at offset → what encrypts the volume; its files are out of reach
    (3, b"-FVE-FS-"): "BitLocker",
    (0, b"LUKS\xba\xbe"): "LUKS",
}


def detect(stream: SourceStream) -> Detection:
    """The filesystem on ``stream`` (a volume) and its label."""
    head = stream.read_at(0, HEAD_BYTES)
    for (at, signature), scheme in _ENCRYPTED.items():
        if head[at : at + len(signature)] == signature:
            problem = f"the volume is encrypted with {scheme}: its files cannot be read from the backup"
            return Detection(FsType.UNKNOWN, problem=problem, unsupported=True)
    kind = _sniff(head)
    try:
        if kind == "lvm2":
            return _lvm(stream)
        if kind == "xfs":
            return Detection(FsType.XFS, _text(d.XFS(stream).name))
        if kind == "ntfs":
            return Detection(FsType.NTFS, _text(d.NTFS(stream).volume_name))
        if kind == "ext":
            return _ext(stream)
        if kind == "swap":
            return Detection(FsType.SWAP, _text(head[_SWAP_LABEL_AT : _SWAP_LABEL_AT + 16]))
        if kind == "fat":
            return _fat(stream)
    except Exception as exc:
        log.info("%s signature found but the volume could not be parsed: %s", kind, exc)
        if kind == "fat":  # a jump instruction is a weak signature: any boot sector has one
            return Detection(FsType.UNKNOWN)
        name = _NAMES.get(kind or "", kind)
        if isinstance(exc, NotImplementedError):
            problem = f"{name} filesystem using a feature that cannot be read ({describe(exc)})"
            return Detection(FsType.UNKNOWN, problem=problem, unsupported=True)
        return Detection(FsType.UNKNOWN, problem=f"{name} signature found, but damaged ({describe(exc)})")
    return Detection(FsType.UNKNOWN)


def spans_whole_disk(head: bytes) -> bool:
    """Whether a disk starts with a filesystem, swap or LVM2 physical volume rather than a partition table.

    ext and LVM2 leave sector 0 alone, so a disk formatted whole after it was partitioned still carries
    the old MBR; their signatures in the first 8 KiB decide, as they do for blkid. (An MBR disk has
    nothing there: the first partition starts further in. On a GPT disk these bytes are the GPT header and
    entries, which a filesystem made on the whole disk overwrote.)
    """
    return _sniff(head) in ("ext", "xfs", "lvm2", "swap") or is_filesystem_boot_sector(head)


def is_filesystem_boot_sector(head: bytes) -> bool:
    """Whether sector 0 of a disk is an NTFS or FAT boot sector, i.e. the disk has no partition table.

    Needed because a FAT boot sector ends in the same 0x55AA signature as an MBR, and dissect only
    rejects boot sectors whose OEM name it knows (mkfs.vfat writes "mkfs.fat").
    """
    if head[3:11] == b"NTFS    ":
        return True
    if _sniff(head) != "fat":
        return False
    try:
        d.FATFS(SourceStream(BytesSource(head)))
    except Exception:
        return False
    return True
