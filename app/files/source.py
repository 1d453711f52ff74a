"""What file browsing reads from: anything with ``read_at(offset, length)`` and ``size``.

A restore point's disk (``app.chunkstore.DiskImageReader``) is one such source, a local image file
(``FileSource``) another. The dissect parsers want a seekable binary file object instead, so
``SourceStream`` adapts a window of a source (a partition) to one. Its file position is shared state: a
``SourceStream`` is used only under the lock of the one filesystem handle that owns it.
"""

from __future__ import annotations

import io
import os
from typing import Protocol, runtime_checkable


@runtime_checkable
class ByteSource(Protocol):
    """Random access to a disk: ``read_at`` returns fewer than ``length`` bytes only at the end."""

    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, length: int) -> bytes: ...


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
        return self._source.read_at(self._offset + offset, end - offset)

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
