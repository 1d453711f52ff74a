"""Random access into a restore point's disk, lazily, with a bounded LRU chunk cache.

This is what file-level restore stands on: a partition table or filesystem parser reads a few KiB here
and there, so chunks are fetched on demand and the recently used ones kept, up to ``cache_bytes``.
It is a read-only, seekable ``io.RawIOBase`` (``read``/``readinto``/``seek``/``tell``) and also offers
``read_at(offset, length)``, the same call as a backup source, thread-safe and independent of the
file position.

Downloading one file is the other access pattern: long sequential runs of the disk (the file's extents),
read once. ``iter_ranges`` serves it with a read-ahead: the chunks the next ranges need are fetched in a
small thread pool while the consumer handles the current one, so fetch, decryption and decompression
overlap as in a full-disk restore, within a fixed number of chunks of memory.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from app.chunkstore.errors import ChunkDamaged
from app.chunkstore.ids import ZERO_ID
from app.chunkstore.index import DiskIndex
from app.chunkstore.repository import Repository

DEFAULT_CACHE_BYTES = 32 << 20
READAHEAD_WORKERS = 4


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

    # -- sequential read-ahead -------------------------------------------------------------------

    def _fetch_uncached(self, number: int) -> bytes:
        """Plaintext of stored chunk ``number``: from the cache if there, else fetched and not kept."""
        chunk_id = self._index.chunk_id(number)
        with self._lock:
            data = self._cache.get(chunk_id)
        if data is None:
            data = self._repo.get_chunk(chunk_id)
            with self._lock:
                self.fetches += 1
        length = self._index.chunk_length(number)
        if len(data) != length:
            raise ChunkDamaged(chunk_id, f"{len(data)} bytes where the index expects {length}")
        return data

    def _pieces(self, ranges: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int, int]]:
        """``(chunk number, offset in chunk, length)`` of every piece of the ranges, in order."""
        chunk_size = self._index.chunk_size
        size = self.size
        for offset, length in ranges:
            if offset < 0 or length < 0 or offset + length > size:
                raise ValueError(f"range ({offset}, {length}) does not lie within the disk of {size} bytes")
            position, end = offset, offset + length
            while position < end:
                number, skip = divmod(position, chunk_size)
                take = min(chunk_size - skip, end - position)
                yield number, skip, take
                position += take

    def iter_ranges(
        self,
        ranges: Iterable[tuple[int, int]],
        *,
        workers: int = READAHEAD_WORKERS,
        ahead: int | None = None,
    ) -> Generator[bytes, None, None]:
        """Yield the bytes of each ``(offset, length)`` range in order, fetching chunks ahead of the consumer.

        Each range comes out as one or more pieces of at most one chunk, never merged with the next
        range, so a caller can tell where each range ends by counting. Up to ``ahead`` chunks (default
        ``2 * workers``) are being fetched or waiting at any time, which bounds memory whatever the ranges
        cover; ``ranges`` itself is consumed lazily. Chunks found in the LRU cache are used, chunks fetched
        here are not added to it: a download reads each chunk once and must not evict the metadata that
        browsing keeps coming back to. Zero chunks cost nothing. Raises ``ValueError`` on reaching a range
        that does not lie within the disk, and ``ChunkMissing``/``ChunkDamaged`` as ``read_at`` does.
        Closing the generator early cancels the fetches not started yet and waits for the running ones.
        """
        if workers < 1:
            raise ValueError("workers must be >= 1")
        ahead = 2 * workers if ahead is None else max(1, ahead)
        plan = self._pieces(ranges)
        # (offset in chunk, length, fetch or None for zeros, whether this entry started the fetch)
        pending: deque[tuple[int, int, Future[bytes] | None, bool]] = deque()
        fetching = 0  # distinct fetches among the pending entries
        last_number = -1
        last_future: Future[bytes] | None = None
        exhausted = False
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunkstore-readahead")
        try:
            while True:
                while not exhausted and fetching < ahead and len(pending) < ahead + 4096:
                    step = next(plan, None)
                    if step is None:
                        exhausted = True
                        break
                    number, skip, take = step
                    started = False
                    if number != last_number:
                        last_number = number
                        last_future = None
                        if self._index.chunk_id(number) != ZERO_ID:
                            last_future = pool.submit(self._fetch_uncached, number)
                            started = True
                            fetching += 1
                    pending.append((skip, take, last_future, started))
                if not pending:
                    return
                skip, take, future, started = pending.popleft()
                if future is None:
                    yield bytes(take)
                    continue
                data = future.result()
                if started:
                    fetching -= 1
                yield data if skip == 0 and take == len(data) else data[skip : skip + take]
        finally:
            pending.clear()
            pool.shutdown(wait=True, cancel_futures=True)

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
