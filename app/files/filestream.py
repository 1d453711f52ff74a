"""A regular file of a backup, opened for reading: a seekable binary file object over the file's layout.

It reads the volume's source directly through the file's extents: no parser and no filesystem lock are
involved once a file is open, so several downloads and a browsing user proceed side by side. Every
``FileStream`` has its own position (and a lock of its own, so one object shared between threads stays
consistent); nothing mutable is shared with other streams.

Sequential reading, the common case (downloads, archives), switches to read-ahead: from the position
of the read on, the file's data extents are handed to ``iter_ranges``, which over a restore point fetches
the chunks ahead in a thread pool (``DiskImageReader.iter_ranges``). A read that does not continue the
previous one is served with plain ``read_at`` calls instead, so random access (an archive's central
directory, a seek to the end) does not start fetches it would throw away, and so is the rest of a small
file (``STREAM_MIN_BYTES``), where a thread pool costs more than it saves. Holes read as zeros without
touching the source. A read either returns all the bytes it promises or raises: a source that ends early
is an error, never a short file.
"""

from __future__ import annotations

import io
import os
import threading
from bisect import bisect_right
from collections.abc import Iterator

from app.files.layout import Extent, Layout
from app.files.source import iter_ranges

# Below this much left to read, plain reads: a read-ahead's thread pool costs more than it saves.
STREAM_MIN_BYTES = 4 << 20


class FileStream(io.RawIOBase):
    """Read-only, seekable view of one file; ``size`` is its length, ``path`` where it was opened."""

    def __init__(self, layout: Layout, path: str) -> None:
        super().__init__()
        self.path = path
        self._layout = layout
        self._extents = layout.extents
        self._starts = [extent.offset for extent in layout.extents]
        self._position = 0
        self._lock = threading.Lock()
        self._last_end = 0  # where the previous read ended: a read starting here is sequential
        # read-ahead state: the pieces of the data extents from _stream_at on, and the segment being read
        self._pieces: Iterator[bytes] | None = None
        self._segments: Iterator[Extent] | None = None
        self._stream_at = 0
        self._segment_left = 0
        self._segment_hole = False
        self._piece = b""
        self._piece_at = 0

    @property
    def size(self) -> int:
        return self._layout.size

    @property
    def name(self) -> str:
        return self.path

    # -- io.RawIOBase ----------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        with self._lock:
            if whence == os.SEEK_SET:
                position = offset
            elif whence == os.SEEK_CUR:
                position = self._position + offset
            elif whence == os.SEEK_END:
                position = self.size + offset
            else:
                raise ValueError(f"invalid whence {whence}")
            if position < 0:
                raise ValueError("negative seek position")
            self._position = position
            return position

    def read(self, size: int | None = -1) -> bytes:
        with self._lock:
            if self.closed:
                raise ValueError("read of a closed file")
            position = self._position
            left = max(0, self.size - position)
            length = left if size is None or size < 0 else min(size, left)
            if length == 0:
                return b""
            if self._pieces is not None and self._stream_at != position:
                self._stop_streaming()
            sequential = position == self._last_end or position == 0
            if self._pieces is None and sequential and self.size - position > STREAM_MIN_BYTES:
                self._start_streaming(position)
            try:
                if self._pieces is not None:
                    data = self._read_streaming(length)
                else:
                    data = self._read_direct(position, length)
            except BaseException:
                self._stop_streaming()  # its state is mid-piece; the next read starts afresh
                raise
            self._position = self._last_end = position + length
            return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        with self._lock:
            self._stop_streaming()
        super().close()

    # -- reading -----------------------------------------------------------------------------------

    def _extent_index(self, position: int) -> int:
        return bisect_right(self._starts, position) - 1

    def _read_direct(self, position: int, length: int) -> bytes:
        """``length`` bytes at ``position`` with plain reads (random access)."""
        parts: list[bytes] = []
        end = position + length
        index = self._extent_index(position)
        while position < end:
            extent = self._extents[index]
            skip = position - extent.offset
            take = min(extent.length - skip, end - position)
            if extent.source_offset is None:
                parts.append(bytes(take))
            else:
                data = self._layout.source.read_at(extent.source_offset + skip, take)
                if len(data) != take:
                    raise EOFError(f"{self.path}: the volume ended {take - len(data)} bytes early")
                parts.append(data)
            position += take
            index += 1
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _start_streaming(self, position: int) -> None:
        first = self._extent_index(position)
        skip = position - self._extents[first].offset
        segments = [*self._extents[first : first + 1]]
        head = segments[0]
        segments[0] = Extent(
            position, head.length - skip, None if head.source_offset is None else head.source_offset + skip
        )
        rest = self._extents[first + 1 :]

        def all_segments() -> Iterator[Extent]:
            yield segments[0]
            yield from rest

        def data_ranges() -> Iterator[tuple[int, int]]:
            for extent in all_segments():
                if extent.source_offset is not None:
                    yield extent.source_offset, extent.length

        self._segments = all_segments()
        self._pieces = iter_ranges(self._layout.source, data_ranges())
        self._stream_at = position
        self._segment_left = 0
        self._piece = b""
        self._piece_at = 0

    def _stop_streaming(self) -> None:
        pieces = self._pieces
        self._pieces = None
        self._segments = None
        self._piece = b""
        if pieces is not None and hasattr(pieces, "close"):
            pieces.close()  # stops the read-ahead's fetches

    def _read_streaming(self, length: int) -> bytes:
        assert self._pieces is not None and self._segments is not None
        parts: list[bytes | memoryview] = []
        need = length
        while need:
            if self._segment_left == 0:
                segment = next(self._segments, None)
                if segment is None:
                    raise EOFError(f"{self.path}: the file's extents end {need} bytes before its size")
                self._segment_left = segment.length
                self._segment_hole = segment.source_offset is None
            if self._segment_hole:
                take = min(need, self._segment_left)
                parts.append(bytes(take))
            else:
                if self._piece_at == len(self._piece):
                    piece = next(self._pieces, None)
                    if piece is None:
                        raise EOFError(f"{self.path}: the volume ended {need} bytes early")
                    self._piece = piece
                    self._piece_at = 0
                available = len(self._piece) - self._piece_at
                take = min(need, self._segment_left, available)
                if self._piece_at == 0 and take == len(self._piece):
                    parts.append(self._piece)
                else:
                    parts.append(memoryview(self._piece)[self._piece_at : self._piece_at + take])
                self._piece_at += take
            self._segment_left -= take
            need -= take
        self._stream_at += length
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return b"".join(parts)
