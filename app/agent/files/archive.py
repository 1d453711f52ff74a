"""Archives of restored files (tar or zip), written as a stream into a repository export.

The archive goes straight from the file streams into the deduplicating repository: nothing is staged
on the proxy's disk, and the server later streams it to the user, verified. Its SHA-256 is computed as
it is written, so the user can check the download end to end.
"""

from __future__ import annotations

import hashlib
import stat
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from app.agent.files.selection import Item, Selection
from app.chunkstore.errors import BackupCancelled
from app.chunkstore.streams import StreamBackup
from app.files import EntryType, FileStream
from app.files.names import printable

COPY_BUFFER = 1 << 20
#: The earliest time a zip entry can carry.
_ZIP_EPOCH = datetime(1980, 1, 1, tzinfo=UTC)


@dataclass
class ArchiveFigures:
    files: int = 0
    bytes: int = 0  # file content
    size: int = 0  # archive bytes
    sha256: str = ""


class _Counting:
    """Write side of the archive: hashes and counts what goes into the stream, checks cancel."""

    def __init__(self, sink: StreamBackup, cancel: threading.Event) -> None:
        self._sink = sink
        self._cancel = cancel
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._cancel.is_set():
            raise BackupCancelled("restore cancelled")
        self.hash.update(data)
        self.size += len(data)
        return self._sink.write(data)

    def flush(self) -> None:
        """Nothing buffered here."""


def _mtime(item: Item) -> float:
    return item.entry.mtime.timestamp() if item.entry.mtime else time.time()


def _copy(item: Item, out: IO[bytes], figures: ArchiveFigures, progress: Callable[[int], None]) -> None:
    with item.fs.open(item.entry.path) as source:
        while True:
            piece = source.read(COPY_BUFFER)
            if not piece:
                break
            out.write(piece)
            figures.bytes += len(piece)
            progress(figures.bytes)
    figures.files += 1


def write_tar(
    selection: Selection, sink: StreamBackup, cancel: threading.Event, progress: Callable[[int], None]
) -> ArchiveFigures:
    figures = ArchiveFigures()
    out = _Counting(sink, cancel)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for item in selection.items():
            entry = item.entry
            info = tarfile.TarInfo(item.name)
            info.mtime = int(_mtime(item))
            info.uid, info.gid = entry.uid or 0, entry.gid or 0
            if entry.type is EntryType.DIR:
                info.type, info.mode = tarfile.DIRTYPE, entry.mode if entry.mode is not None else 0o755
                tar.addfile(info)
            elif entry.type is EntryType.SYMLINK:
                info.type, info.mode = tarfile.SYMTYPE, 0o777
                info.linkname = entry.symlink_target or ""
                tar.addfile(info)
            else:
                info.type, info.mode, info.size = (
                    tarfile.REGTYPE,
                    entry.mode if entry.mode is not None else 0o644,
                    entry.size,
                )
                with item.fs.open(entry.path) as source:
                    tar.addfile(info, _Progressing(source, figures, progress))
                figures.files += 1
    figures.size, figures.sha256 = out.size, out.hash.hexdigest()
    return figures


def write_zip(
    selection: Selection, sink: StreamBackup, cancel: threading.Event, progress: Callable[[int], None]
) -> ArchiveFigures:
    figures = ArchiveFigures()
    out = _Counting(sink, cancel)
    # zipfile writes to an unseekable file with data descriptors; ZIP64 where sizes need it.
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:  # type: ignore[call-overload]
        for item in selection.items():
            entry = item.entry
            when = max(datetime.fromtimestamp(_mtime(item), UTC), _ZIP_EPOCH)
            # Zip names are UTF-8: a byte that is not is written as \xNN (tar keeps the bytes).
            name = printable(item.name + "/" if entry.type is EntryType.DIR else item.name)
            info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
            if entry.type is EntryType.DIR:
                info.external_attr = (stat.S_IFDIR | (entry.mode or 0o755)) << 16 | 0x10
                archive.writestr(info, b"")
            elif entry.type is EntryType.SYMLINK:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                archive.writestr(info, (entry.symlink_target or "").encode("utf-8", "surrogateescape"))
            else:
                info.external_attr = (stat.S_IFREG | (entry.mode or 0o644)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(info, "w", force_zip64=entry.size >= 1 << 31) as target:
                    _copy(item, target, figures, progress)
    figures.size, figures.sha256 = out.size, out.hash.hexdigest()
    return figures


class _Progressing:
    """A file stream that reports the content bytes read through it (tar pulls from it)."""

    def __init__(self, source: FileStream, figures: ArchiveFigures, progress: Callable[[int], None]) -> None:
        self._source = source
        self._figures = figures
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size if size and size > 0 else COPY_BUFFER)
        self._figures.bytes += len(data)
        self._progress(self._figures.bytes)
        return data
