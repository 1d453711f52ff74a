"""The one importer of the dissect parsers (partition tables, LVM2, ext, XFS, NTFS, FAT).

dissect ships no type information, so everything here is ``Any`` to mypy; keeping the imports in one
module keeps the ``type: ignore`` comments in one place too, and shows at a glance which parts of
dissect the package relies on. Nothing dissect returns leaves ``app.files``: drivers turn it into
``Entry`` and ``Volume`` values.
"""

from __future__ import annotations

from dissect.extfs import ExtFS  # type: ignore[import-untyped, unused-ignore]
from dissect.extfs.c_ext import EXT2, EXT3, EXT4  # type: ignore[import-untyped, unused-ignore]
from dissect.fat import FATFS  # type: ignore[import-untyped, unused-ignore]
from dissect.fat.c_fat import Fattype  # type: ignore[import-untyped, unused-ignore]
from dissect.fat.fat import RootDirectory  # type: ignore[import-untyped, unused-ignore]
from dissect.ntfs import NTFS  # type: ignore[import-untyped, unused-ignore]
from dissect.ntfs.c_ntfs import (  # type: ignore[import-untyped, unused-ignore]
    ATTRIBUTE_TYPE_CODE,
    FILE_NAME_DOS,
)
from dissect.ntfs.util import segment_reference  # type: ignore[import-untyped, unused-ignore]
from dissect.volume.disk import Disk  # type: ignore[import-untyped, unused-ignore]
from dissect.volume.disk.schemes import APM, BSD, GPT, MBR  # type: ignore[import-untyped, unused-ignore]
from dissect.volume.lvm import LVM2  # type: ignore[import-untyped, unused-ignore]
from dissect.volume.lvm.physical import LVM2Device  # type: ignore[import-untyped, unused-ignore]
from dissect.xfs import XFS  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "APM",
    "ATTRIBUTE_TYPE_CODE",
    "BSD",
    "EXT2",
    "EXT3",
    "EXT4",
    "FATFS",
    "FILE_NAME_DOS",
    "GPT",
    "LVM2",
    "MBR",
    "NTFS",
    "XFS",
    "Disk",
    "ExtFS",
    "Fattype",
    "LVM2Device",
    "RootDirectory",
    "segment_reference",
]
