"""What file browsing reads from: anything with ``read_at(offset, length)`` and ``size``.

A restore point's disk (``app.chunkstore.DiskImageReader``) is one such source, a local image file
(``FileSource``) another. Volumes are sources too: ``SliceSource`` is a partition (a window of the disk),
``MappedSource`` a logical volume (pieces of the disk put end to end). The dissect parsers want a
seekable binary file object instead, so ``SourceStream`` adapts a source to one. Its file position is
shared state: a ``SourceStream`` is used only under the lock of the one filesystem handle that owns it.

Sources may also offer ``iter_ranges`` (``RangeReader``): the bytes of many ranges in order, read ahead.
``DiskImageReader`` does, which is what makes downloading a large file as fast as a full-disk restore;
``iter_ranges()`` falls back to plain reads for sources without it.

A failure of the source itself (an I/O error, a missing or damaged chunk) is not a damaged filesystem
and must not be reported as one. Parsers catch broad exceptions in places, so ``SourceStream`` wraps
whatever the source raises in ``SourceFailure``, which they cannot catch by accident; the package's entry
points (``errors.translate``) unwrap it and raise the source's own exception.
"""

from __future__ import annotations

import io
import os
import threading
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol, runtime_checkable

from app.files.errors import CorruptFilesystem, SourceFailure, translate

PIECE_BYTES = 1 << 20  # largest single read when a source has no iter_ranges of its own


@runtime_checkable
class ByteSource(Protocol):
    """Random access to a disk: ``read_at`` returns fewer than ``length`` bytes only at the end."""

    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, length: int) -> bytes: ...


@runtime_checkable
class RangeReader(Protocol):
    """A source that can stream many ranges with read-ahead (``DiskImageReader.iter_ranges``).

    Contract: the bytes of each range in order, as one or more pieces that never span two ranges.
    """

    def iter_ranges(self, ranges: Iterable[tuple[int, int]]) -> Iterator[bytes]: ...


def iter_ranges(source: ByteSource, ranges: Iterable[tuple[int, int]]) -> Iterator[bytes]:
    """The bytes of ``ranges`` of ``source`` in order (see ``RangeReader``), read ahead where it can.

    Every range is checked to lie within the source, and every piece to be complete: a short read raises
    ``EOFError`` rather than shift the bytes that follow.
    """
    if isinstance(source, RangeReader):
        yield from source.iter_ranges(_checked(source, ranges))
        return
    for offset, length in _checked(source, ranges):
        end = offset + length
        while offset < end:
            take = min(PIECE_BYTES, end - offset)
            data = source.read_at(offset, take)
            if len(data) != take:
                raise EOFError(f"{take} bytes wanted at {offset}, the source gave {len(data)}")
            yield data
            offset += take


def _checked(source: ByteSource, ranges: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    size = source.size
    for offset, length in ranges:
        if offset < 0 or length < 0 or offset + length > size:
            raise EOFError(f"range ({offset}, {length}) does not lie within the {size} bytes of the source")
        yield offset, length


class BytesSource:
    """Bytes in memory as a source: resident file data, or a disk's first sectors being checked."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def size(self) -> int:
        return len(self._data)

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        return self._data[offset : offset + length]


class SliceSource:
    """``[offset, offset + size)`` of another source: a partition. Thread-safe when the source is."""

    def __init__(self, source: ByteSource, offset: int, size: int) -> None:
        if offset < 0 or size < 0:
            raise ValueError("offset and size must be >= 0")
        self._source = source
        self._offset = offset
        self._size = max(0, min(size, source.size - offset))

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        end = min(offset + length, self._size)
        if offset >= end:
            return b""
        return self._source.read_at(self._offset + offset, end - offset)

    def iter_ranges(self, ranges: Iterable[tuple[int, int]]) -> Iterator[bytes]:
        shifted = ((self._offset + offset, length) for offset, length in _checked(self, ranges))
        return iter_ranges(self._source, shifted)


class MappedSource:
    """Pieces of another source put end to end: a logical volume made of extents on the disk.

    ``pieces`` are ``(offset in the source, length)`` in logical order. Thread-safe when the source is.
    """

    def __init__(self, source: ByteSource, pieces: Iterable[tuple[int, int]]) -> None:
        self._source = source
        self._starts: list[int] = []  # logical offset of each piece
        self._pieces: list[tuple[int, int]] = []
        position = 0
        for offset, length in pieces:
            if offset < 0 or length <= 0:
                raise ValueError(f"invalid piece ({offset}, {length})")
            self._starts.append(position)
            self._pieces.append((offset, length))
            position += length
        self._size = position

    @property
    def size(self) -> int:
        return self._size

    def _map(self, offset: int, length: int) -> Iterator[tuple[int, int]]:
        """The ranges of the source that hold ``[offset, offset + length)`` (clipped to the size)."""
        end = min(offset + length, self._size)
        index = bisect_right(self._starts, offset) - 1
        while offset < end:
            start = self._starts[index]
            source_offset, piece_length = self._pieces[index]
            take = min(end, start + piece_length) - offset
            yield source_offset + offset - start, take
            offset += take
            index += 1

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        parts = []
        for source_offset, take in self._map(offset, length):
            data = self._source.read_at(source_offset, take)
            parts.append(data)
            if len(data) != take:  # the disk ends inside the volume: return what there is, like a file
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def iter_ranges(self, ranges: Iterable[tuple[int, int]]) -> Iterator[bytes]:
        mapped = (piece for offset, length in _checked(self, ranges) for piece in self._map(offset, length))
        return iter_ranges(self._source, mapped)


class LockedStreamSource:
    """A parser's own stream (e.g. NTFS compressed data) as a source, read only under its filesystem's lock.

    The parser's stream reads through the filesystem's shared ``SourceStream``, so every read takes the
    lock; the stream's own position is set on each read, which makes ``read_at`` independent of it.
    """

    def __init__(self, stream: BinaryIO, size: int, lock: threading.RLock, context: str) -> None:
        self._stream = stream
        self._size = size
        self._lock = lock
        self._context = context  # what is being read, for error messages: "reading /a/b.txt"

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        length = max(0, min(length, self._size - offset))
        if length == 0:
            return b""
        with self._lock, translate(self._context):
            self._stream.seek(offset)
            data: bytes = self._stream.read(length)
        if len(data) != length:
            raise CorruptFilesystem(f"{self._context}: the data ends {length - len(data)} bytes early")
        return data


class FileSource:
    """A disk image in a local file, read with ``pread`` (no shared position, so thread-safe)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        parts: list[bytes] = []
        got = 0
        while got < length:
            data = os.pread(self._fd, length - got, offset + got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SourceStream(io.RawIOBase):
    """A read-only, seekable file object over ``[offset, offset + size)`` of a source.

    Reads go straight to ``read_at`` (no buffer of its own: the chunk cache of ``DiskImageReader`` or the
    page cache is below, and the parsers above keep what they need), so what the parsers ask for is
    exactly what is read.
    """

    def __init__(self, source: ByteSource, offset: int = 0, size: int | None = None) -> None:
        super().__init__()
        if offset < 0:
            raise ValueError("offset must be >= 0")
        available = max(0, source.size - offset)
        self._source = source
        self._offset = offset
        self._size = available if size is None else max(0, min(size, available))
        self._position = 0

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` within the window, independent of the position."""
        end = min(offset + length, self._size)
        if offset < 0 or offset >= end:
            return b""
        try:
            return self._source.read_at(self._offset + offset, end - offset)
        except Exception as exc:
            raise SourceFailure(exc) from exc

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            position = offset
        elif whence == os.SEEK_CUR:
            position = self._position + offset
        elif whence == os.SEEK_END:
            position = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if position < 0:
            raise ValueError("negative seek position")
        self._position = position
        return position

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self._size - self._position)
        data = self.read_at(self._position, size)
        self._position += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)
