"""File-level browsing of image backups: partitions, LVM2 and filesystems (ext2/3/4, XFS, NTFS, FAT).

``DiskBrowser(source)`` over a disk (``app.chunkstore.DiskImageReader`` for a restore point, or
``FileSource`` for an image file) lists its volumes and opens their filesystems; ``Filesystem`` lists,
stats, opens and walks by path; files come out as ``FileStream`` objects. Everything returned is plain
data; nothing of the parsers (dissect, AGPL-3.0 like this project) leaves the package.
"""

from app.files.browser import DiskBrowser
from app.files.errors import (
    CorruptFilesystem,
    FilesError,
    InvalidPath,
    IsADirectory,
    NotADirectory,
    NotAFile,
    PathNotFound,
    UnsupportedFilesystem,
    VolumeNotFound,
)
from app.files.filestream import FileStream
from app.files.filesystem import Filesystem
from app.files.listing import DEFAULT_LIMIT, MAX_LIMIT
from app.files.models import DirectoryPage, Entry, EntryType, FsType, Scheme, Volume
from app.files.source import ByteSource, FileSource

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "ByteSource",
    "CorruptFilesystem",
    "DirectoryPage",
    "DiskBrowser",
    "Entry",
    "EntryType",
    "FileSource",
    "FileStream",
    "FilesError",
    "Filesystem",
    "FsType",
    "InvalidPath",
    "IsADirectory",
    "NotADirectory",
    "NotAFile",
    "PathNotFound",
    "Scheme",
    "UnsupportedFilesystem",
    "Volume",
    "VolumeNotFound",
]
