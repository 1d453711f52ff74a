"""Backup of one disk into the repository: a bounded, threaded pipeline.

    plan ─▶ read_at + zero check + hash (pool) ─▶ dedup check in batches (caller's thread)
         ─▶ compress + encrypt + write, new chunks only (pool) ─▶ index entry

Chunks are fixed-size and aligned to disk offsets, so CBT's changed areas map onto chunk numbers: with
``previous_index`` and ``changed_extents`` only the overlapped chunks are read and every other entry is
copied from the previous index (incremental forever; the result is still a complete index). Without
extents every chunk is read and hashed, and a chunk whose id equals the previous index's entry at the
same position is reused without asking the backend.

Memory stays bounded whatever the disk size: at most ``max_inflight`` chunks are between "read" and
"done" at any time (plus the index itself, 32 bytes per chunk). The heavy steps (pread, BLAKE3, zstd,
AES-GCM, write/fsync) release the GIL, so the thread pool uses every core.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from app.chunkstore.backend import BytesLike
from app.chunkstore.errors import BackupCancelled
from app.chunkstore.extents import chunk_ranges, in_ranges
from app.chunkstore.ids import ID_SIZE, ZERO_ID
from app.chunkstore.index import DiskIndex, chunk_count
from app.chunkstore.repository import Repository
from app.chunkstore.sources import DiskReader
from app.chunkstore.tuning import tune_malloc

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 4
# Upper bound on chunk bytes in flight when choosing the default window (memory, not speed, bound).
INFLIGHT_BYTES = 32 << 20


@dataclass(slots=True)
class BackupStats:
    chunks_total: int = 0  # chunks in the disk
    chunks_done: int = 0  # processed so far: zero + reused + new
    chunks_read: int = 0  # read from the source (the rest came from the previous index)
    chunks_new: int = 0  # stored by this backup
    chunks_zero: int = 0  # all-zero, recorded as sparse, never stored
    chunks_reused: int = 0  # already in the repository (dedup) or unchanged since the previous index
    bytes_read: int = 0
    bytes_new: int = 0  # plaintext bytes of new chunks
    bytes_stored: int = 0  # what the new chunks take in the repository (compressed, encrypted)
    duration: float = 0.0  # seconds

    def snapshot(self) -> BackupStats:
        return dataclasses.replace(self)


@dataclass(frozen=True, slots=True)
class DiskBackupResult:
    index: DiskIndex
    stats: BackupStats


ProgressCallback = Callable[[BackupStats], None]


@dataclass(slots=True)
class _Hashed:
    number: int
    chunk_id: bytes
    length: int
    data: BytesLike | None  # None when nothing is left to do (zero, or same as the previous index)


@dataclass(slots=True)
class _Stored:
    number: int
    chunk_id: bytes
    length: int
    stored: int


def backup_disk(
    repo: Repository,
    reader: DiskReader,
    size: int,
    *,
    changed_extents: Iterable[tuple[int, int]] | None = None,
    previous_index: DiskIndex | None = None,
    workers: int = DEFAULT_WORKERS,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    progress_interval: float = 0.5,
    max_inflight: int | None = None,
) -> DiskBackupResult:
    """Back up ``size`` bytes from ``reader``; return the disk's complete index and the statistics.

    ``changed_extents`` (``(offset, length)`` pairs, the CBT answer since ``previous_index`` was taken)
    requires ``previous_index``. Nothing is published: the caller adds the index to a restore point
    and commits it. Raises ``BackupCancelled`` soon after ``cancel`` is set.
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    if workers < 1:
        raise ValueError("workers must be >= 1")
    chunk_size = repo.chunk_size
    if previous_index is not None and previous_index.chunk_size != chunk_size:
        raise ValueError("previous_index was made with another chunk size")
    if changed_extents is not None and previous_index is None:
        raise ValueError("changed_extents needs the previous_index they are relative to")
    if max_inflight is None:
        max_inflight = max(2 * workers, min(INFLIGHT_BYTES // chunk_size, 4 * workers))
    tune_malloc()
    started = time.monotonic()
    # Chunks taken over from the previous index are touched now, so that a GC sweep during this
    # backup cannot remove them even if the previous point is pruned meanwhile. If any is gone,
    # trust nothing of that index: read the whole disk.
    if (
        changed_extents is not None
        and previous_index is not None
        and repo.touch_chunks(previous_index.unique_ids())
    ):
        log.warning("chunks of the previous restore point are missing; reading the whole disk")
        changed_extents = None
        previous_index = None
    count = chunk_count(size, chunk_size)
    stats = BackupStats(chunks_total=count)
    ids = bytearray(count * ID_SIZE)
    plan = _plan(size, chunk_size, previous_index, changed_extents, ids, stats)
    pipeline = _Pipeline(
        repo, reader, size, previous_index, ids, stats, max_inflight, progress, progress_interval, started
    )
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunkstore-backup")
    try:
        pipeline.run(pool, plan, cancel)
    finally:
        # On error or cancel, queued work is dropped; running jobs (one chunk each) finish first.
        pool.shutdown(wait=True, cancel_futures=True)
    stats.duration = time.monotonic() - started
    return DiskBackupResult(DiskIndex(size, chunk_size, ids), stats)


def _plan(
    size: int,
    chunk_size: int,
    previous: DiskIndex | None,
    changed_extents: Iterable[tuple[int, int]] | None,
    ids: bytearray,
    stats: BackupStats,
) -> Iterator[int]:
    """Yield the chunk numbers to read; fill in the entries taken unchanged from ``previous``."""
    count = chunk_count(size, chunk_size)
    if changed_extents is None or previous is None:
        yield from range(count)
        return
    prev_ids = previous.ids_view()
    reusable = min(count, len(previous))
    ids[: reusable * ID_SIZE] = prev_ids[: reusable * ID_SIZE]
    for number, changed in enumerate(in_ranges(count, chunk_ranges(changed_extents, chunk_size, size))):
        same_geometry = number < reusable and previous.chunk_length(number) == min(
            chunk_size, size - number * chunk_size
        )
        if changed or not same_geometry:
            yield number
            continue
        stats.chunks_done += 1
        if ids[number * ID_SIZE : (number + 1) * ID_SIZE] == ZERO_ID:
            stats.chunks_zero += 1
        else:
            stats.chunks_reused += 1


class _Pipeline:
    """The coordinator: runs in the caller's thread, owns the stats and the index, feeds the pool."""

    def __init__(
        self,
        repo: Repository,
        reader: DiskReader,
        size: int,
        previous: DiskIndex | None,
        ids: bytearray,
        stats: BackupStats,
        max_inflight: int,
        progress: ProgressCallback | None,
        progress_interval: float,
        started: float,
    ) -> None:
        self._repo = repo
        self._reader = reader
        self._size = size
        self._chunk_size = repo.chunk_size
        self._previous = previous
        self._ids = ids
        self._stats = stats
        self._window = max(1, max_inflight)
        self._batch_size = max(1, self._window // 2)
        self._progress = progress
        self._progress_interval = progress_interval
        self._started = started
        self._last_progress = started
        self._zero = bytes(self._chunk_size)  # preallocated: the zero check is one memcmp
        self._storing: set[bytes] = set()  # ids submitted for storing by this run and not done yet

    # -- worker side (pool threads) --------------------------------------------------------------

    def _read_and_hash(self, number: int) -> _Hashed:
        offset = number * self._chunk_size
        length = min(self._chunk_size, self._size - offset)
        data = self._reader.read_at(offset, length)
        if len(data) != length:
            raise OSError(f"short read at offset {offset}: {len(data)} of {length} bytes")
        if isinstance(data, memoryview):
            data = data.tobytes()  # bytes compare with memcmp; memoryview compares item by item
        zero = self._zero if length == self._chunk_size else bytes(length)
        if data == zero:
            return _Hashed(number, ZERO_ID, length, None)
        chunk_id = self._repo.chunk_id(data)
        previous = self._previous
        if previous is not None and number < len(previous) and previous.chunk_id(number) == chunk_id:
            return _Hashed(number, chunk_id, length, None)  # unchanged since the previous backup
        return _Hashed(number, chunk_id, length, data)

    def _store(self, item: _Hashed) -> _Stored:
        assert item.data is not None
        stored = self._repo.put_chunk(item.chunk_id, item.data)
        return _Stored(item.number, item.chunk_id, item.length, stored)

    # -- coordinator side ------------------------------------------------------------------------

    def run(self, pool: ThreadPoolExecutor, plan: Iterator[int], cancel: threading.Event | None) -> None:
        events: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        inflight = 0  # chunks submitted for reading and not yet done
        reads_pending = 0
        batch: list[_Hashed] = []
        exhausted = False
        while True:
            if cancel is not None and cancel.is_set():
                raise BackupCancelled("backup cancelled")
            while not exhausted and inflight < self._window:
                number = next(plan, None)
                if number is None:
                    exhausted = True
                    break
                pool.submit(self._read_and_hash, number).add_done_callback(events.put)
                inflight += 1
                reads_pending += 1
            if batch and (len(batch) >= self._batch_size or reads_pending == 0):
                inflight -= self._dedup(pool, batch, events)
                batch = []
                continue
            if inflight == 0 and exhausted:
                break
            try:
                future = events.get(timeout=0.1)
            except queue.Empty:
                self._maybe_progress()
                continue
            result = future.result()  # a worker's exception ends the backup here
            if isinstance(result, _Hashed):
                reads_pending -= 1
                self._stats.chunks_read += 1
                self._stats.bytes_read += result.length
                if result.data is None:
                    self._done_reused(result.number, result.chunk_id)
                    inflight -= 1
                else:
                    batch.append(result)
            else:
                self._done_stored(result)
                inflight -= 1
            self._maybe_progress()

    def _dedup(
        self, pool: ThreadPoolExecutor, batch: list[_Hashed], events: queue.SimpleQueue[Future[Any]]
    ) -> int:
        """Check a batch against the repository; submit the new chunks; return how many are done."""
        absent = self._repo.missing(h.chunk_id for h in batch if h.chunk_id not in self._storing)
        done = 0
        for item in batch:
            if item.chunk_id in absent and item.chunk_id not in self._storing:
                self._storing.add(item.chunk_id)
                pool.submit(self._store, item).add_done_callback(events.put)
            else:
                # Present already, or being stored by this run (the same content twice in one disk).
                self._done_reused(item.number, item.chunk_id)
                done += 1
        return done

    def _record(self, number: int, chunk_id: bytes) -> None:
        self._ids[number * ID_SIZE : (number + 1) * ID_SIZE] = chunk_id

    def _done_reused(self, number: int, chunk_id: bytes) -> None:
        self._record(number, chunk_id)
        self._stats.chunks_done += 1
        if chunk_id == ZERO_ID:
            self._stats.chunks_zero += 1
        else:
            self._stats.chunks_reused += 1

    def _done_stored(self, item: _Stored) -> None:
        self._record(item.number, item.chunk_id)
        self._storing.discard(item.chunk_id)
        stats = self._stats
        stats.chunks_done += 1
        stats.chunks_new += 1
        stats.bytes_new += item.length
        stats.bytes_stored += item.stored

    def _maybe_progress(self) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if now - self._last_progress >= self._progress_interval:
            self._last_progress = now
            self._stats.duration = now - self._started
            self._progress(self._stats.snapshot())
