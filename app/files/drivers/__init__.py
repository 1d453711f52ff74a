"""Filesystem drivers: one per family of filesystems, all behind ``Driver`` (see ``base.py``)."""

from __future__ import annotations

import threading

from app.files.drivers.base import Driver
from app.files.drivers.ext import ExtDriver
from app.files.drivers.fat import FatDriver
from app.files.drivers.ntfs import NtfsDriver
from app.files.drivers.xfs import XfsDriver
from app.files.models import FsType
from app.files.source import ByteSource

_DRIVERS: dict[FsType, type[ExtDriver | XfsDriver | NtfsDriver | FatDriver]] = {
    FsType.EXT2: ExtDriver,
    FsType.EXT3: ExtDriver,
    FsType.EXT4: ExtDriver,
    FsType.XFS: XfsDriver,
    FsType.NTFS: NtfsDriver,
    FsType.FAT12: FatDriver,
    FsType.FAT16: FatDriver,
    FsType.FAT32: FatDriver,
}


def open_driver(fstype: FsType, source: ByteSource, lock: threading.RLock) -> Driver | None:
    """The driver for ``fstype`` opened on ``source``, or None when none reads that filesystem."""
    driver = _DRIVERS.get(fstype)
    return None if driver is None else driver(source, lock)


__all__ = ["Driver", "open_driver"]
