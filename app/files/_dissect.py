"""The one importer of the dissect parsers (partition tables, LVM2, ext, XFS, NTFS, FAT).

dissect ships no type information, so everything here is ``Any`` to mypy; keeping the imports in one
module keeps the ``type: ignore`` comments in one place too, and shows at a glance which parts of
dissect the package relies on. Nothing dissect returns leaves ``app.files``: drivers turn it into
``Entry`` and ``Volume`` values.

A few of the names are dissect's internals rather than its public classes: ``ext_parse_extents`` and
``xfs_fsb_to_bb`` here, and in the drivers XFS's ``INode._iter_blocks`` (the parsed bmap records) and
the ``_runlist`` of a FAT directory entry (set to a chain followed with a bound). The drivers build
file layouts from the parsed on-disk records themselves because the run lists dissect assembles read
unwritten extents and some holes as data (see ``drivers/ext.py``, ``drivers/xfs.py``), and FAT chains
are bounded because dissect follows a looping chain forever. An upgrade of dissect has to be checked
against these uses; tests/files exercises each of them.
"""

from __future__ import annotations

from dissect.extfs import ExtFS  # type: ignore[import-untyped, unused-ignore]
from dissect.extfs.c_ext import EXT2, EXT3, EXT4, c_ext  # type: ignore[import-untyped, unused-ignore]
from dissect.extfs.extfs import _parse_extents as ext_parse_extents  # type: ignore[import-untyped, unused-ignore]
from dissect.fat import FATFS  # type: ignore[import-untyped, unused-ignore]
from dissect.fat.c_fat import Fattype  # type: ignore[import-untyped, unused-ignore]
from dissect.fat.fat import RootDirectory  # type: ignore[import-untyped, unused-ignore]
from dissect.ntfs import NTFS  # type: ignore[import-untyped, unused-ignore]
from dissect.ntfs.c_ntfs import (  # type: ignore[import-untyped, unused-ignore]
    ATTRIBUTE_FLAG_COMPRESSION_MASK,
    ATTRIBUTE_FLAG_ENCRYPTED,
    ATTRIBUTE_TYPE_CODE,
    FILE_NAME_DOS,
    FILE_RECORD_SEGMENT_IN_USE,
    IO_REPARSE_TAG,
    c_ntfs,
)
from dissect.ntfs.util import segment_reference  # type: ignore[import-untyped, unused-ignore]
from dissect.util.sid import read_sid  # type: ignore[import-untyped, unused-ignore]
from dissect.util.ts import dostimestamp  # type: ignore[import-untyped, unused-ignore]
from dissect.volume.disk import Disk  # type: ignore[import-untyped, unused-ignore]
from dissect.volume.disk.partition import PARTITION_TYPES  # type: ignore[import-untyped, unused-ignore]
from dissect.volume.disk.schemes import APM, BSD, GPT, MBR  # type: ignore[import-untyped, unused-ignore]
from dissect.volume.lvm import LVM2  # type: ignore[import-untyped, unused-ignore]
from dissect.volume.lvm.physical import LVM2Device  # type: ignore[import-untyped, unused-ignore]
from dissect.xfs import XFS  # type: ignore[import-untyped, unused-ignore]
from dissect.xfs.c_xfs import c_xfs  # type: ignore[import-untyped, unused-ignore]
from dissect.xfs.xfs import fsb_to_bb as xfs_fsb_to_bb  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "APM",
    "ATTRIBUTE_FLAG_COMPRESSION_MASK",
    "ATTRIBUTE_FLAG_ENCRYPTED",
    "ATTRIBUTE_TYPE_CODE",
    "BSD",
    "EXT2",
    "EXT3",
    "EXT4",
    "FATFS",
    "FILE_NAME_DOS",
    "FILE_RECORD_SEGMENT_IN_USE",
    "GPT",
    "IO_REPARSE_TAG",
    "LVM2",
    "MBR",
    "NTFS",
    "PARTITION_TYPES",
    "XFS",
    "Disk",
    "ExtFS",
    "Fattype",
    "LVM2Device",
    "RootDirectory",
    "c_ext",
    "c_ntfs",
    "c_xfs",
    "dostimestamp",
    "ext_parse_extents",
    "read_sid",
    "segment_reference",
    "xfs_fsb_to_bb",
]
