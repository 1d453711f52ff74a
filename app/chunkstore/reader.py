"""Random access into a restore point's disk, lazily, with a bounded LRU chunk cache.

This is what file-level restore stands on: a partition table or filesystem parser reads a few KiB here
and there, so chunks are fetched on demand and the recently used ones kept, up to ``cache_bytes``.
It is a read-only, seekable ``io.RawIOBase`` (``read``/``readinto``/``seek``/``tell``) and also offers
``read_at(offset, length)``, the same call as a backup source, thread-safe and independent of the
file position.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict

from app.chunkstore.ids import ZERO_ID
from app.chunkstore.index import DiskIndex
from app.chunkstore.repository import Repository

DEFAULT_CACHE_BYTES = 32 << 20


class DiskImageReader(io.RawIOBase):
    def __init__(self, repo: Repository, index: DiskIndex, *, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        super().__init__()
        self._repo = repo
        self._index = index
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._cache_bytes = max(0, cache_bytes)
        self._cached = 0
        self._lock = threading.Lock()
        self._position = 0
        self.fetches = 0  # chunk fetches from the repository (cache misses), for tests and metrics

    @property
    def size(self) -> int:
        return self._index.disk_size

    # -- random access ---------------------------------------------------------------------------

    def _chunk(self, number: int) -> bytes | None:
        """Plaintext of chunk ``number``, or None for a zero chunk."""
        chunk_id = self._index.chunk_id(number)
        if chunk_id == ZERO_ID:
            return None
        with self._lock:
            data = self._cache.get(chunk_id)
            if data is not None:
                self._cache.move_to_end(chunk_id)
                return data
        data = self._repo.get_chunk(chunk_id)  # outside the lock: fetches of different chunks overlap
        with self._lock:
            self.fetches += 1
            if chunk_id not in self._cache and len(data) <= self._cache_bytes:
                self._cache[chunk_id] = data
                self._cached += len(data)
                while self._cached > self._cache_bytes:
                    _, evicted = self._cache.popitem(last=False)
                    self._cached -= len(evicted)
        return data

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer only at the end of the disk)."""
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        chunk_size = self._index.chunk_size
        parts: list[bytes] = []
        position = offset
        while position < end:
            number, skip = divmod(position, chunk_size)
            take = min(chunk_size - skip, end - position)
            data = self._chunk(number)
            if data is None:
                parts.append(bytes(take))
            elif skip == 0 and take == len(data):
                parts.append(data)
            else:
                parts.append(data[skip : skip + take])
            position += take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # -- file-like -------------------------------------------------------------------------------

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
            position = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if position < 0:
            raise ValueError("negative seek position")
        self._position = position
        return position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read_at(self._position, len(buffer))
        n = len(data)
        memoryview(buffer).cast("B")[:n] = data
        self._position += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self.size - self._position)
        data = self.read_at(self._position, size)
        self._position += len(data)
        return data
